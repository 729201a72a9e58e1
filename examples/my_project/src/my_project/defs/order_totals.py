"""A user's own asset downstream of a connector stream: it gets the stream's table as a DataFrame."""

import dagster as dg
import pandas as pd


@dg.asset(ins={"orders": dg.AssetIn(key=["trackstar", "orders"])})
def order_count(orders: pd.DataFrame) -> int:
    return len(orders)
