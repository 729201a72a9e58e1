"""A local Trackstar: the unified WMS API as documented in ``shared/vendors/trackstar/openapi.json``.

What it serves (all JSON):

- ``GET /wms/inventory|products|orders|warehouses|inbound-shipments|returns|billing|inventory/ledger|
  shipping-methods|warehouse-customers|labor-activities|orders/channels|inbound-shipments/suppliers`` with
  headers ``x-trackstar-api-key`` and ``x-trackstar-access-token``; envelope ``{"data", "next_token",
  "total_count"}`` (``total_count`` = records in this page); ``limit`` 1..1000 (default 1000);
  filters ``field[op]=value`` with ops ``eq neq gt gte lt lte in nin`` on ``updated_date``,
  ``created_date`` (strict ``YYYY-MM-DDTHH:MM:SSZ``) and a few scalar fields per resource;
  ``ids[in]`` (≤ 100, overrides every other filter). Records come in ``(updated_date, id)`` order.
- ``GET /wms/warehouses/{warehouse_id}/locations``: a list like the others, of one warehouse's locations;
  ``GET /wms/orders/{order_id}/packs`` → ``{"data": OrderPackSchema}``, no query parameters, no paging.
  Both answer 404 (``{"error", "id"}``, openapi.json HTTPError) for an unknown parent.
- ``GET /wms/<resource>/<id>`` → ``{"data": {...}}`` or 404.
- ``POST /link/token``, ``POST /link/exchange``, ``GET /connections[/<id>]`` (API key only); a connection's
  ``available_actions`` use openapi.json's names (``get_orders``, ``get_bills``, ...).

Each connection (access token) is its own WMS with its own data: ids carry the connection's letter
(``inv_a_000001`` for ``conn_a``). Streams listed in ``unsupported`` for a connection answer 501
with ``origin: "integration"`` and the documented body (``Endpoint get_returns is not implemented for
...``), as Trackstar does when the underlying WMS lacks the endpoint; those in ``disabled`` answer 403
(disabled for the connection); ``revoke(connection_id)`` makes a token answer 401 like any invalid token.

Page tokens are opaque keyset tokens (base64 of the last ``(updated_date, id)`` served plus a
fingerprint of connection, resource and filters); a token sent with different filters is a 422.

Rate limiting (``rate_limit_per_second``): a token bucket per access token, capacity = rate,
refill = rate per second. A 429 carries ``retry-after`` in **decimal seconds** (e.g. ``0.1``,
rounded up to the millisecond: parse it with ``float``), ``x-ratelimit-limit``,
``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (integer epoch seconds when a request will be
allowed again). Successful responses carry the ``x-ratelimit-*`` headers too.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from svix.webhooks import Webhook

from integrations_pipeline.sandbox.base import VendorSandbox, WebhookOutbox, json_response
from integrations_pipeline.sandbox.data import (
    CITIES,
    FIRST_NAMES,
    LAST_NAMES,
    Key,
    LazyStore,
    Window,
    decode_token,
    encode_token,
    fake_address,
    fake_email,
    fake_phone,
    fingerprint,
    iso,
    mix64,
    money,
    parse_iso,
)

# List stream name -> (URL path under /wms/, id prefix): openapi.json's GET /wms/... list paths.
STREAMS: dict[str, tuple[str, str]] = {
    "inventory": ("inventory", "inv"),
    "products": ("products", "prod"),
    "orders": ("orders", "ord"),
    "warehouses": ("warehouses", "wh"),
    "inbound_shipments": ("inbound-shipments", "ibs"),
    "returns": ("returns", "ret"),
    "bills": ("billing", "bill"),
    "inventory_ledger": ("inventory/ledger", "led"),
    "shipping_methods": ("shipping-methods", "shm"),
    "warehouse_customers": ("warehouse-customers", "wc"),
    "labor_activities": ("labor-activities", "lab"),
    "order_channels": ("orders/channels", "ch"),
    "inbound_shipment_suppliers": ("inbound-shipments/suppliers", "sup"),
}
SEGMENT_TO_STREAM = {segment: stream for stream, (segment, _) in STREAMS.items()}
# Child stream -> (parent list stream, URL segment after the parent's id): GET /wms/warehouses/{warehouse_id}/
# locations (WmsWarehouseLocationsListEndpoint, pages and filters like a list) and GET /wms/orders/{order_id}/
# packs (WmsOrderPacksSingleItemEndpoint: one object, no query parameters). Both answer 404 for an unknown parent.
CHILDREN: dict[str, tuple[str, str]] = {
    "warehouse_locations": ("warehouses", "locations"),
    "order_packs": ("orders", "packs"),
}
ID_PREFIX = {**{stream: prefix for stream, (_, prefix) in STREAMS.items()}, "warehouse_locations": "loc"}
# What a connection lists in available_actions for each stream: openapi.json ConnectionResourceSyncSchema
# functions_to_sync enum (get_inventory ... get_shipments; the 501 body of docs.trackstarhq.com "About the API"
# names get_returns too). Labor activities, order channels, suppliers and packs have no name there: none listed.
ACTIONS: dict[str, str] = {
    "inventory": "get_inventory",
    "products": "get_products",
    "orders": "get_orders",
    "warehouses": "get_warehouses",
    "inbound_shipments": "get_inbound_shipments",
    "returns": "get_returns",
    "bills": "get_bills",
    "inventory_ledger": "get_inventory_ledger",
    "shipping_methods": "get_shipping_methods",
    "warehouse_customers": "get_warehouse_customers",
    "warehouse_locations": "get_warehouse_locations",
}
# Webhook event type prefixes per stream (openapi.json "webhooks": order.updated, inbound-shipment.created, ...;
# labor_activity.created from the documentation repository's webhook pages). Streams without one send none.
EVENT_PREFIX = {
    "inventory": "inventory",
    "products": "product",
    "orders": "order",
    "warehouses": "warehouse",
    "inbound_shipments": "inbound-shipment",
    "returns": "return",
    "bills": "bill",
    "inventory_ledger": "inventory_ledger",
    "shipping_methods": "shipping-method",
    "warehouse_customers": "warehouse-customer",
    "labor_activities": "labor_activity",
    "warehouse_locations": "warehouse-location",
}
#: The sandbox endpoint's Svix signing secret (``whsec_`` + base64), as the Trackstar dashboard shows one.
SANDBOX_WEBHOOK_SECRET = "whsec_c2FuZGJveC10cmFja3N0YXItd2ViaG9vay1zZWNyZXQ="
DEFAULT_SIZES = {
    "inventory": 2500,
    "products": 1200,
    "orders": 3000,
    "warehouses": 5,
    "inbound_shipments": 400,
    "returns": 300,
    "bills": 800,
    "inventory_ledger": 1500,
    "shipping_methods": 6,
    "warehouse_customers": 3,
    "labor_activities": 900,
    "order_channels": 4,
    "inbound_shipment_suppliers": 6,
    "warehouse_locations": 60,  # spread over the warehouses; order packs follow the orders
}
DEFAULT_CONNECTIONS = {"conn_a": "sandbox-token-a", "conn_b": "sandbox-token-b"}
DEFAULT_UNSUPPORTED = {"conn_b": ["returns"]}
# Integration (underlying WMS) names given to connections in order.
INTEGRATIONS = ("shipbob", "shiphero", "extensiv-3pl-central", "deposco", "logiwa")

OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "nin")
DATE_FIELDS = ("updated_date", "created_date")
# Scalar fields each resource can also be filtered on (besides the dates).
FILTER_FIELDS: dict[str, tuple[str, ...]] = {
    "inventory": ("sku", "name", "active", "warehouse_customer_id"),
    "products": ("sku", "name", "active", "is_kit", "supplier", "warehouse_customer_id"),
    "orders": ("status", "type", "channel", "warehouse_id", "order_number", "reference_id", "warehouse_customer_id"),
    "warehouses": ("name", "code"),
    "inbound_shipments": ("status", "supplier", "warehouse_id", "purchase_order_number", "warehouse_customer_id"),
    "returns": ("status", "order_id", "warehouse_customer_id"),
    # The parameters openapi.json lists for each path (fields the records do not carry are left out).
    "bills": ("warehouse_customer_id",),
    "inventory_ledger": ("event_type",),
    "shipping_methods": (),
    "warehouse_customers": (),
    "labor_activities": ("activity_type", "associated_object_id", "associated_object_type", "user_id", "warehouse_id"),
    "order_channels": ("warehouse_customer_id",),
    "inbound_shipment_suppliers": ("warehouse_customer_id",),
    "warehouse_locations": ("type",),
}
MAX_LIMIT = 1000
MAX_IN_VALUES = 100
DUPLICATE_OVERLAP = 3
_PARAM_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]*)\])?$")

# Catalog vocabulary: SKUs and names shared by inventory, products and order lines.
_PRODUCT_KINDS = (
    ("TEE", "Tee"),
    ("HOOD", "Hoodie"),
    ("MUG", "Mug"),
    ("BTL", "Water Bottle"),
    ("CAP", "Cap"),
    ("SOCK", "Socks"),
    ("TOTE", "Tote Bag"),
    ("CNDL", "Candle"),
    ("NTBK", "Notebook"),
    ("LAMP", "Desk Lamp"),
    ("BAND", "Resistance Band"),
    ("MAT", "Yoga Mat"),
    ("CHRG", "USB-C Charger"),
    ("CBL", "Braided Cable"),
)
_COLORS = (
    ("BLK", "Black"),
    ("WHT", "White"),
    ("NVY", "Navy"),
    ("GRN", "Forest Green"),
    ("RED", "Red"),
    ("SND", "Sand"),
    ("GRY", "Heather Grey"),
)
_ADJECTIVES = ("Classic", "Organic", "Everyday", "Premium", "Recycled", "Travel", "Essential", "Signature")
_SUPPLIERS = (
    "Pacific Textile Co",
    "Evergreen Manufacturing",
    "Blue Ridge Supply",
    "Shenzhen Bright Goods",
    "Northstar Imports",
    "Atlas Packaging",
)
_ORIGINS = ("US", "CN", "VN", "MX", "PT", "IN", "BD", "TR")
_CARRIERS = (
    # carrier_id, carrier_name, scac, shipping_method, service_level
    ("ups", "UPS", "UPSN", "UPS Ground", "ground"),
    ("ups", "UPS", "UPSN", "UPS 2nd Day Air", "2_day"),
    ("fedex", "FedEx", "FDEG", "FedEx Home Delivery", "ground"),
    ("usps", "USPS", "USPS", "USPS Ground Advantage", "ground"),
    ("usps", "USPS", "USPS", "USPS Priority Mail", "priority"),
    ("dhl", "DHL eCommerce", "DHLC", "DHL Parcel Expedited", "expedited"),
)
_CHANNELS = (("shopify", "Shopify"), ("amazon", "Amazon"), ("wholesale", "Wholesale"), ("tiktok", "TikTok Shop"))
_ORDER_STATUSES = (
    "open",
    "confirmed",
    "processing",
    "picked",
    "packed",
    "fulfilled",
    "fulfilled",
    "fulfilled",
    "partially_fulfilled",
    "cancelled",
    "backordered",
    "exception",
)
_ORDER_FLOW = ("open", "confirmed", "processing", "picked", "packed", "fulfilled")
_INBOUND_STATUSES = ("open", "in-transit", "receiving", "received", "received", "cancelled")
_INBOUND_FLOW = ("open", "in-transit", "receiving", "received")
_RETURN_STATUSES = ("open", "in-transit", "receiving", "received", "received", "cancelled")
_RETURN_REASONS = (
    "Too small",
    "Too large",
    "Damaged in transit",
    "Changed mind",
    "Wrong item received",
    "Defective",
    None,
)
_WAREHOUSE_SITES = ("Reno", "Columbus", "Dallas", "Atlanta", "Newark", "Ontario", "Louisville", "Phoenix")
# (charge_type, object_type, stream the object is in): BillSchema.object_type/charge_type are free text.
_CHARGES = (
    ("pick_fee", "order", "orders"),
    ("packaging", "order", "orders"),
    ("shipping_label", "order", "orders"),
    ("receiving", "inbound_shipment", "inbound_shipments"),
    ("storage", "inventory", "inventory"),
    ("return_processing", "return", "returns"),
)
# (event_type, object_type, stream, sign, raw_event_type): InventoryLedgerSchema.event_type and object_type enums.
_LEDGER_EVENTS = (
    ("order_shipment", "order", "orders", -1, "Shipped"),
    ("order_shipment", "order", "orders", -1, "Shipped"),
    ("inbound_receipt", "inbound_shipment", "inbound_shipments", 1, "Received"),
    ("return_receipt", "return", "returns", 1, "Return received"),
    ("adjustment", None, None, 0, "Cycle count"),
    ("movement", None, None, 0, "Moved"),
    ("supplier_return", None, None, -1, "Returned to vendor"),
    ("other", None, None, 0, "Manual edit"),
)
# LaborActivitySchema.activity_type and associated_object_type enums.
_ACTIVITIES = (
    ("pick", "order", "orders"),
    ("pack", "order", "orders"),
    ("put_away", "inbound_shipment", "inbound_shipments"),
    ("receive", "inbound_shipment", "inbound_shipments"),
    ("transfer", "inventory", "inventory"),
)
_MERCHANTS = ("Bluebird Goods", "Summit Outfitters", "Harbor & Co", "Greenleaf Market", "Northwind Traders")
_LOCATION_TYPES = ("bin", "bin", "bin", "shelf", "pallet", "floor")


def _raw(status: str) -> str:
    """The WMS's own spelling of a normalised status (Trackstar keeps both)."""
    return status.replace("_", " ").replace("-", " ").title()


def _rev_name(name: str | None, r: random.Random) -> str:
    """A visibly different name: ``<base> (rev N)``, N differing from any previous revision."""
    base = (name or "").split(" (rev ")[0]
    previous = (name or "").split(" (rev ")[1].rstrip(")") if " (rev " in (name or "") else ""
    rev = str(r.randrange(2, 1000))
    while rev == previous:
        rev = str(r.randrange(2, 1000))
    return f"{base} (rev {rev})"


class _Tenant:
    """One connected WMS: its connection id, token, integration name and one lazy store per list stream (and
    one for warehouse locations; order packs are computed from their orders)."""

    def __init__(self, seed: int, connection_id: str, token: str, integration: str, sizes: dict[str, int]) -> None:
        self.connection_id = connection_id
        self.token = token
        self.integration = integration
        self.key = mix64(seed, "trackstar", connection_id)
        self.letter = re.sub(r"[^a-z0-9]", "", connection_id.lower().removeprefix("conn_")) or "x"
        self.sizes = sizes
        self.n_wh = max(1, sizes["warehouses"])
        # Other records name the warehouse customers, suppliers and channels the lists serve.
        self.customers = [self.rid("warehouse_customers", k) for k in range(max(1, sizes["warehouse_customers"]))]
        generators: dict[str, Callable[[int, int, int], dict[str, Any]]] = {
            "inventory": self._inventory,
            "products": self._product,
            "orders": self._order,
            "warehouses": self._warehouse,
            "inbound_shipments": self._inbound,
            "returns": self._return,
            "bills": self._bill,
            "inventory_ledger": self._ledger_entry,
            "shipping_methods": self._shipping_method,
            "warehouse_customers": self._warehouse_customer,
            "labor_activities": self._labor_activity,
            "order_channels": self._order_channel,
            "inbound_shipment_suppliers": self._supplier,
            "warehouse_locations": self._location,
        }
        self.stores: dict[str, LazyStore] = {}
        for stream, prefix in ID_PREFIX.items():
            id_prefix = f"{prefix}_{self.letter}_"
            self.stores[stream] = LazyStore(
                size=sizes[stream],
                key=mix64(self.key, stream),
                generate=generators[stream],
                id_of=functools.partial(_id_of, id_prefix),
                index_of=functools.partial(_index_of, id_prefix),
                cursor_field="updated_date",
                created_field="created_date",
            )

    # -- references shared between streams ------------------------------------------------------

    def rid(self, stream: str, i: int) -> str:
        return f"{ID_PREFIX[stream]}_{self.letter}_{i + 1:06d}"

    def supplier_id(self, name: str) -> str:
        return self.rid(
            "inbound_shipment_suppliers", _SUPPLIERS.index(name) % max(1, self.sizes["inbound_shipment_suppliers"])
        )

    def channel_id(self, k: int) -> str:
        return self.rid("order_channels", k % max(1, self.sizes["order_channels"]))

    def catalog(self, c: int) -> dict[str, Any]:
        """Catalog entry ``c``: inventory item ``c`` and product ``c`` share its SKU and name."""
        return self._catalog(c)[0]

    def _catalog(self, c: int) -> tuple[dict[str, Any], random.Random]:
        """The entry and its RNG, left where the entry's draws end: inventory item ``c`` keeps
        drawing from it (one seeding per record instead of two; inventory is the hot path)."""
        r = random.Random(mix64(self.key, "catalog", c))
        rand = r.random
        code, noun = _PRODUCT_KINDS[int(rand() * len(_PRODUCT_KINDS))]
        color_code, color = _COLORS[int(rand() * len(_COLORS))]
        price = round(6 + rand() * 114, 2)
        entry = {
            "sku": f"{code}-{color_code}-{c + 1:05d}",
            "name": f"{_ADJECTIVES[int(rand() * len(_ADJECTIVES))]} {color} {noun}",
            "unit_price": price,
            "unit_cost": round(price * (0.25 + rand() * 0.3), 2),
            "supplier": _SUPPLIERS[int(rand() * len(_SUPPLIERS))],
            "weight": round(0.1 + rand() * 3.9, 2),
        }
        return entry, r

    def warehouse_address(self, w: int) -> dict[str, Any]:
        """Warehouse ``w``'s address, in the city its name carries (shipments reuse it)."""
        address = fake_address(random.Random(mix64(self.key, "warehouse-address", w)))
        site = _WAREHOUSE_SITES[w % len(_WAREHOUSE_SITES)]
        city, state, prefix, country = next(c for c in CITIES if c[0] == site)
        address.update(city=city, state=state, postal_code=f"{prefix}{w % 90 + 10:02d}", country=country)
        return address

    def url(self, kind: str, n: int) -> str:
        return f"https://app.{self.integration}.example.com/{kind}/{n}"

    # -- generators -----------------------------------------------------------------------------

    def _inventory(self, i: int, ts: int, created: int) -> dict[str, Any]:
        # Hot path (benchmarks serve 10^5..10^6 of these): draws with ``random()`` only, no helpers.
        cat, r = self._catalog(i)
        rand = r.random
        n_wh = self.n_wh
        first = int(rand() * n_wh)
        whs = [first] if n_wh == 1 or rand() < 0.6 else sorted({first, (first + 1 + int(rand() * (n_wh - 1))) % n_wh})
        lotted = rand() < 0.25
        by_wh: dict[str, dict[str, int]] = {}
        locations = []
        lots = []
        totals = [0, 0, 0, 0, 0, 0, 0]
        for w in whs:
            wid = f"wh_{self.letter}_{w + 1:06d}"
            onhand = int(rand() * 500)
            committed = min(onhand, int(rand() * 40))
            unfulfillable = min(onhand - committed, int(rand() * 5))
            unsellable = min(onhand, int(rand() * 4))
            awaiting = 0 if rand() < 0.75 else 10 + int(rand() * 190)
            levels = (
                awaiting,
                onhand,
                committed,
                unfulfillable,
                onhand - committed - unfulfillable,
                unsellable,
                onhand - unsellable,
            )
            by_wh[wid] = dict(zip(_LEVELS, levels, strict=False))
            for k in range(7):
                totals[k] += levels[k]
            locations.append(
                {
                    "location_id": f"{chr(65 + int(rand() * 8))}-{1 + int(rand() * 39):02d}-{1 + int(rand() * 5):02d}",
                    "quantity": onhand,
                    "warehouse_id": wid,
                }
            )
            if lotted:
                lots.append(
                    {
                        "lot_id": f"LOT-{10000 + int(rand() * 89999)}",
                        "onhand": onhand,
                        "expiration_date": iso(ts + (90 + int(rand() * 630)) * 86400),
                        "warehouse_id": wid,
                    }
                )
        n_inv = self.sizes["inventory"]
        return {
            "id": f"inv_{self.letter}_{i + 1:06d}",
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": cat["name"],
            "sku": cat["sku"],
            "unit_cost": cat["unit_cost"],
            "active": rand() < 0.95,
            "awaiting": totals[0],
            "onhand": totals[1],
            "committed": totals[2],
            "unfulfillable": totals[3],
            "fulfillable": totals[4],
            "unsellable": totals[5],
            "sellable": totals[6],
            "substitute_skus": [self.catalog((i + 7) % n_inv)["sku"]] if rand() < 0.05 else [],
            "inventory_by_warehouse_id": by_wh,
            "lots": lots,
            "measurements": {
                "length": round(2 + rand() * 28, 1),
                "width": round(2 + rand() * 18, 1),
                "height": round(0.5 + rand() * 14.5, 1),
                "unit": "in",
                "weight": cat["weight"],
                "weight_unit": "lb",
            },
            "locations": locations,
            "external_system_url": f"https://app.{self.integration}.example.com/inventory/{i + 1}",
            "trackstar_tags": [],
            "additional_fields": {},
        }

    def _product(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "products", i))
        cat = self.catalog(i)
        n_inv = self.sizes["inventory"]
        is_kit = n_inv >= 2 and r.random() < 0.05
        if is_kit:
            parts = sorted({(i * 7 + 1) % n_inv, (i * 13 + 2) % n_inv})
            items = [
                {
                    "inventory_item_id": self.rid("inventory", p),
                    "sku": self.catalog(p)["sku"],
                    "unit_quantity": r.randrange(1, 4),
                }
                for p in parts
            ]
        elif i < n_inv:
            items = [{"inventory_item_id": self.rid("inventory", i), "sku": cat["sku"], "unit_quantity": 1}]
        else:
            items = []
        supplier_id = self.supplier_id(cat["supplier"])
        return {
            "id": self.rid("products", i),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": cat["name"] + (" Kit" if is_kit else ""),
            "sku": cat["sku"],
            "gtin": f"00{r.randrange(10**11, 10**12)}",
            "unit_price": cat["unit_price"],
            "inventory_items": items,
            "is_kit": is_kit,
            "active": r.random() < 0.95,
            "supplier": cat["supplier"],
            "supplier_object": {"supplier_id": supplier_id, "supplier_name": cat["supplier"]},
            "country_of_origin": r.choice(_ORIGINS),
            "harmonized_code": f"{r.randrange(3900, 9999)}.{r.randrange(10, 99)}.{r.randrange(0, 9999):04d}",
            "supplier_products": [
                {
                    "supplier_id": supplier_id,
                    "supplier_name": cat["supplier"],
                    "external_id": f"SP-{r.randrange(100000, 999999)}",
                    "unit_cost": f"{cat['unit_cost']:.2f}",
                }
            ],
            "external_system_url": self.url("products", i + 1),
            "trackstar_tags": [],
            "additional_fields": {},
        }

    def _ship_to(self, r: random.Random, unique: int) -> dict[str, Any]:
        first, last = r.choice(FIRST_NAMES), r.choice(LAST_NAMES)
        addr = fake_address(r)
        return {
            "full_name": f"{first} {last}",
            "company": r.choice((None, None, None, "Acme Retail", "Northwind Traders", "Bluebird Goods")),
            "address1": addr["address1"],
            "address2": addr["address2"],
            "address3": None,
            "city": addr["city"],
            "state": addr["state"],
            "postal_code": addr["postal_code"],
            "country": addr["country"],
            "phone_number": fake_phone(r),
            "email_address": fake_email(first, last, unique),
        }

    def _order(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "orders", i))
        n_prod = max(1, self.sizes["products"])
        line_items = []
        for k in sorted(r.sample(range(n_prod), min(n_prod, r.randrange(1, 5)))):
            cat = self.catalog(k)
            qty = r.randrange(1, 6)
            discount = round(cat["unit_price"] * qty * 0.1, 2) if r.random() < 0.15 else 0.0
            line_items.append(
                {
                    "product_id": self.rid("products", k),
                    "sku": cat["sku"],
                    "quantity": qty,
                    "unit_price": cat["unit_price"],
                    "is_picked": False,
                    "discount_amount": discount,
                }
            )
        status = r.choice(_ORDER_STATUSES)
        for li in line_items:
            li["is_picked"] = status in ("picked", "packed", "fulfilled", "partially_fulfilled")
        subtotal = sum(li["unit_price"] * li["quantity"] for li in line_items)
        total_discount = round(sum(li["discount_amount"] for li in line_items), 2)
        total_shipping = r.choice((0.0, 0.0, 4.99, 7.99, 12.5))
        total_tax = round((subtotal - total_discount) * 0.08, 2)
        carrier_id, carrier_name, scac, method, level = r.choice(_CARRIERS)
        channel = r.randrange(len(_CHANNELS))
        channel_id, channel_name = _CHANNELS[channel]
        order_type = "b2b" if channel_id == "wholesale" else "d2c"
        w = r.randrange(self.n_wh)
        wid = self.rid("warehouses", w)
        ship_to = self._ship_to(r, i + 1)
        shipments = []
        if status in ("fulfilled", "partially_fulfilled"):
            shipped = min(ts, created + r.randrange(3600, 3 * 86400))
            shipped_lines = line_items if status == "fulfilled" else line_items[:1]
            lines = [
                {
                    "inventory_item_id": self.rid(
                        "inventory", _product_inventory(li["product_id"], self.sizes["inventory"])
                    ),
                    "sku": li["sku"],
                    "quantity": li["quantity"],
                    "parent_product_id": None,
                }
                for li in shipped_lines
            ]
            tracking = f"1Z{r.randrange(10**15, 10**16)}"
            shipments.append(
                {
                    "shipment_id": f"shp_{self.letter}_{i + 1:06d}",
                    "warehouse_id": wid,
                    "raw_status": "Shipped",
                    "status": "shipped",
                    "shipped_date": iso(shipped),
                    "shipping_method": method,
                    "line_items": lines,
                    "ship_to_address": dict(ship_to),
                    "ship_from_address": self.warehouse_address(w),
                    "packages": [
                        {
                            "package_id": f"pkg_{self.letter}_{i + 1:06d}",
                            "package_name": "Box M",
                            "tracking_number": tracking,
                            "tracking_url": f"https://track.example.com/{carrier_id}/{tracking}",
                            "shipping_method": method,
                            "carrier": carrier_name,
                            "shipping_method_id": f"{carrier_id}_{level}",
                            "shipping_method_name": method,
                            "carrier_id": carrier_id,
                            "carrier_name": carrier_name,
                            "scac": scac,
                            "shipping_cost": money(r, 4, 25),
                            "measurements": {
                                "length": 12.0,
                                "width": 9.0,
                                "height": 4.0,
                                "unit": "in",
                                "weight": round(r.uniform(0.3, 10), 2),
                                "weight_unit": "lb",
                            },
                            "line_items": [
                                {**{k: v for k, v in ln.items()}, "lot_id": None, "expiration_date": None}
                                for ln in lines
                            ],
                        }
                    ],
                }
            )
        number = 100000 + i + 1
        return {
            "id": self.rid("orders", i),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "warehouse_id": wid,
            "created_date": iso(created),
            "updated_date": iso(ts),
            "reference_id": f"SO-{number}",
            "order_number": f"#{number}",
            "status": status,
            "raw_status": _raw(status),
            "channel": channel_id,
            "channel_object": {"channel_id": self.channel_id(channel), "channel_name": channel_name},
            "type": order_type,
            "trading_partner": r.choice(("Target", "Nordstrom", "REI")) if order_type == "b2b" else None,
            "shipping_method": method,
            "service_level": level,
            "shipping_method_id": f"{carrier_id}_{level}",
            "shipping_method_name": method,
            "carrier_id": carrier_id,
            "carrier_name": carrier_name,
            "scac": scac,
            "is_third_party_freight": order_type == "b2b" and r.random() < 0.5,
            "third_party_freight_account_number": None,
            "first_party_freight_account_number": None,
            "invoice_currency_code": "CAD" if ship_to["country"] == "CA" else "USD",
            "total_price": round(subtotal - total_discount + total_shipping + total_tax, 2),
            "total_tax": total_tax,
            "total_discount": total_discount,
            "total_shipping": total_shipping,
            "ship_to_address": ship_to,
            "line_items": line_items,
            "tags": r.choice(([], [], ["vip"], ["gift"], ["subscription"])),
            "required_ship_date": iso(created + 2 * 86400),
            "saturday_delivery": r.random() < 0.05,
            "signature_required": r.random() < 0.1,
            "international_duty_paid_by": "sender" if ship_to["country"] != "US" else None,
            "shipments": shipments,
            "external_system_url": self.url("orders", number),
            "trackstar_tags": [],
            "additional_fields": {},
        }

    def _warehouse(self, i: int, ts: int, created: int) -> dict[str, Any]:
        site = _WAREHOUSE_SITES[i % len(_WAREHOUSE_SITES)]
        n = i // len(_WAREHOUSE_SITES) + 1
        return {
            "id": self.rid("warehouses", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": f"{site} Fulfillment Center" + (f" {n}" if n > 1 else ""),
            "code": f"{site[:3].upper()}{n}",
            "address": self.warehouse_address(i),
            "trackstar_tags": [],
            "additional_fields": {},
        }

    def _inbound(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "inbound_shipments", i))
        n_inv = max(1, self.sizes["inventory"])
        status = r.choice(_INBOUND_STATUSES)
        lines = []
        for c in sorted(r.sample(range(n_inv), min(n_inv, r.randrange(1, 6)))):
            cat = self.catalog(c)
            expected = r.randrange(10, 500)
            received = expected if status == "received" else (r.randrange(0, expected) if status == "receiving" else 0)
            lines.append(
                {
                    "inventory_item_id": self.rid("inventory", c),
                    "sku": cat["sku"],
                    "expected_quantity": expected,
                    "received_quantity": received,
                    "unit_cost": cat["unit_cost"],
                    "external_id": f"POL-{r.randrange(10000, 99999)}",
                }
            )
        receipts = []
        if status in ("receiving", "received"):
            receipts.append(
                {
                    "id": f"rcpt_{self.letter}_{i + 1:06d}",
                    "arrived_date": iso(min(ts, created + r.randrange(86400, 10 * 86400))),
                    "line_items": [
                        {
                            "inventory_item_id": ln["inventory_item_id"],
                            "sku": ln["sku"],
                            "quantity": ln["received_quantity"],
                        }
                        for ln in lines
                    ],
                }
            )
        supplier = r.choice(_SUPPLIERS)
        return {
            "id": self.rid("inbound_shipments", i),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "purchase_order_number": f"PO-{200000 + i + 1}",
            "status": status,
            "raw_status": _raw(status),
            "supplier": supplier,
            "supplier_object": {
                "supplier_id": self.supplier_id(supplier),
                "supplier_name": supplier,
            },
            "expected_arrival_date": iso(created + r.randrange(3, 21) * 86400),
            "warehouse_id": self.rid("warehouses", r.randrange(self.n_wh)),
            "line_items": lines,
            "receipts": receipts,
            "ship_from_address": fake_address(r),
            "tracking_numbers": [f"1Z{r.randrange(10**15, 10**16)}"] if status != "open" else [],
            "notes": [r.choice(("Palletized", "Floor loaded", "Call before delivery"))] if r.random() < 0.3 else [],
            "external_system_url": self.url("receiving", 200000 + i + 1),
            "trackstar_tags": [],
            "additional_fields": {},
        }

    def _return(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "returns", i))
        n_inv = max(1, self.sizes["inventory"])
        n_orders = self.sizes["orders"]
        status = r.choice(_RETURN_STATUSES)
        wid = self.rid("warehouses", r.randrange(self.n_wh))
        lines = []
        ship_lines = []
        for c in sorted(r.sample(range(n_inv), min(n_inv, r.randrange(1, 3)))):
            sku = self.catalog(c)["sku"]
            qty = r.randrange(1, 3)
            received = qty if status == "received" else 0
            lines.append(
                {
                    "inventory_item_id": self.rid("inventory", c),
                    "sku": sku,
                    "expected_quantity": qty,
                    "received_quantity": received,
                    "restocked_quantity": received if received and r.random() < 0.8 else (0 if received else None),
                    "return_reason": r.choice(_RETURN_REASONS),
                    "quantity": qty,
                    "warehouse_id": wid,
                    "returned_date": iso(created) if status != "open" else None,
                }
            )
            ship_lines.append(
                {
                    "inventory_item_id": self.rid("inventory", c),
                    "sku": sku,
                    "quantity": qty,
                    "receiving_details": [{"quantity": received, "condition": "good", "disposition": "restock"}]
                    if received
                    else [],
                }
            )
        carrier_id, carrier_name, scac, _, _ = r.choice(_CARRIERS)
        shipped = status != "open"
        return {
            "id": self.rid("returns", i),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "status": status,
            "raw_status": _raw(status),
            "order_id": self.rid("orders", r.randrange(n_orders)) if n_orders else None,
            "notes": [],
            "line_items": lines,
            "shipments": [
                {
                    "tracking_number": f"9400{r.randrange(10**17, 10**18)}" if shipped else None,
                    "shipped_date": iso(created) if shipped else None,
                    "arrived_date": iso(min(ts, created + 4 * 86400)) if status in ("receiving", "received") else None,
                    "warehouse_id": wid,
                    "carrier": carrier_name,
                    "carrier_id": carrier_id,
                    "carrier_name": carrier_name,
                    "scac": scac,
                    "shipping_cost": money(r, 5, 15),
                    "measurements": {
                        "length": 10.0,
                        "width": 8.0,
                        "height": 4.0,
                        "unit": "in",
                        "weight": round(r.uniform(0.3, 5), 2),
                        "weight_unit": "lb",
                    },
                    "line_items": ship_lines,
                }
            ],
            "external_system_url": self.url("returns", i + 1),
            "trackstar_tags": [],
            "additional_fields": {},
        }

    # BillSchema (GET /wms/billing).
    def _bill(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "bills", i))
        charge, object_type, stream = r.choice(_CHARGES)
        n = self.sizes[stream]
        return {
            "id": self.rid("bills", i),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "object_id": self.rid(stream, r.randrange(n)) if n else None,
            "object_type": object_type,
            "charge_type": charge,
            "amount": money(r, 0.25, 45),
            "currency_code": "USD",
            "additional_fields": {},
        }

    # InventoryLedgerSchema (GET /wms/inventory/ledger).
    def _ledger_entry(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "inventory_ledger", i))
        event, object_type, stream, sign, raw = r.choice(_LEDGER_EVENTS)
        c = r.randrange(max(1, self.sizes["inventory"]))
        w = r.randrange(self.n_wh)
        n_loc = self.sizes["warehouse_locations"]
        # Location k is in warehouse k % n_wh (``_location``): pick one of warehouse w's, if it has any.
        in_w = range(w, n_loc, self.n_wh)
        n = self.sizes[stream] if stream else 0
        return {
            "id": self.rid("inventory_ledger", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "entry_date": iso(created),
            "inventory_item_id": self.rid("inventory", c),
            "sku": self.catalog(c)["sku"],
            "quantity": (sign or r.choice((-1, 1))) * r.randrange(1, 40),
            "raw_event_type": raw,
            "event_type": event,
            "reason": r.choice(("Damaged", "Found in count", "Relabelled", None)) if event == "adjustment" else None,
            "object_id": self.rid(stream, r.randrange(n)) if stream and n else None,
            "object_type": object_type,
            "warehouse_id": self.rid("warehouses", w),
            "location_id": self.rid("warehouse_locations", r.choice(in_w)) if len(in_w) else None,
            "additional_fields": {},
        }

    # ShippingMethodSchema (GET /wms/shipping-methods): one per carrier service of the orders' vocabulary.
    def _shipping_method(self, i: int, ts: int, created: int) -> dict[str, Any]:
        carrier_id, carrier_name, scac, method, _ = _CARRIERS[i % len(_CARRIERS)]
        n = i // len(_CARRIERS)
        return {
            "id": self.rid("shipping_methods", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": method + (f" {n + 1}" if n else ""),
            "carrier": carrier_name,  # deprecated in the schema, still served
            "carrier_id": carrier_id,
            "carrier_name": carrier_name,
            "scac": scac,
            "additional_fields": {},
        }

    # WarehouseCustomerSchema (GET /wms/warehouse-customers): the merchants other records name.
    def _warehouse_customer(self, i: int, ts: int, created: int) -> dict[str, Any]:
        name = _MERCHANTS[i % len(_MERCHANTS)] + (f" {i // len(_MERCHANTS) + 1}" if i >= len(_MERCHANTS) else "")
        return {
            "id": self.rid("warehouse_customers", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": name,
            "email": f"ops.{i + 1}@{name.split()[0].lower()}.example.com",
            "additional_fields": {},
        }

    # LaborActivitySchema (GET /wms/labor-activities).
    def _labor_activity(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "labor_activities", i))
        activity, object_type, stream = r.choice(_ACTIVITIES)
        user = r.randrange(12)
        person = random.Random(mix64(self.key, "labor-user", user))
        n = self.sizes[stream]
        return {
            "id": self.rid("labor_activities", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "user_id": f"usr_{self.letter}_{user + 1:03d}",
            "user_first_name": person.choice(FIRST_NAMES),
            "user_last_name": person.choice(LAST_NAMES),
            "warehouse_id": self.rid("warehouses", r.randrange(self.n_wh)),
            "activity_type": activity,
            "activity_start_time": iso(created),
            "activity_end_time": iso(min(ts, created + r.randrange(30, 1800))) if r.random() < 0.95 else None,
            "associated_object_type": object_type,
            "associated_object_id": self.rid(stream, r.randrange(n)) if n else None,
            "quantity": r.randrange(1, 60),
            "additional_fields": {},
        }

    # OrderChannelSchema (GET /wms/orders/channels): the channels orders name in channel_object.
    def _order_channel(self, i: int, ts: int, created: int) -> dict[str, Any]:
        _, name = _CHANNELS[i % len(_CHANNELS)]
        return {
            "id": self.rid("order_channels", i),
            "name": name + (f" {i // len(_CHANNELS) + 1}" if i >= len(_CHANNELS) else ""),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "additional_fields": {},
        }

    # InboundShipmentSupplierSchema (GET /wms/inbound-shipments/suppliers): the suppliers products and
    # inbound shipments name in supplier_object.
    def _supplier(self, i: int, ts: int, created: int) -> dict[str, Any]:
        return {
            "id": self.rid("inbound_shipment_suppliers", i),
            "name": _SUPPLIERS[i % len(_SUPPLIERS)] + (f" {i // len(_SUPPLIERS) + 1}" if i >= len(_SUPPLIERS) else ""),
            "warehouse_customer_id": self.customers[i % len(self.customers)],
            "created_date": iso(created),
            "updated_date": iso(ts),
            "additional_fields": {},
        }

    # WarehouseLocationSchema (GET /wms/warehouses/{warehouse_id}/locations): location i is in warehouse i % n_wh.
    def _location(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "warehouse_locations", i))
        row = i // self.n_wh
        return {
            "id": self.rid("warehouse_locations", i),
            "created_date": iso(created),
            "updated_date": iso(ts),
            "name": f"{chr(65 + row % 8)}-{1 + row // 8 % 39:02d}-{1 + r.randrange(5):02d}",
            "warehouse_id": self.rid("warehouses", i % self.n_wh),
            "type": r.choice(_LOCATION_TYPES),
            # LocationMeasurements
            "measurements": {
                "length": round(r.uniform(20, 60), 1),
                "width": round(r.uniform(20, 48), 1),
                "height": round(r.uniform(10, 80), 1),
                "unit": "in",
                "weight": round(r.uniform(50, 2000), 1),
                "weight_unit": "lb",
            },
            "additional_fields": {},
        }


def order_packs(order: dict[str, Any]) -> dict[str, Any]:
    """GET /wms/orders/{order_id}/packs for one order: OrderPackSchema, from the order's shipped packages
    (Pack {pack_id, measurements, line_items[PackLineItem]}) and lines (WmsOrderPackLineItem). An order not
    packed yet answers ``packs: []`` ([unconfirmed]: the OpenAPI names no other answer but 404)."""
    return {
        "packs": [
            {
                "pack_id": package["package_id"],
                "measurements": dict(package["measurements"]),
                "line_items": [
                    {"inventory_item_id": li["inventory_item_id"], "sku": li["sku"], "quantity": li["quantity"]}
                    for li in package["line_items"]
                ],
            }
            for shipment in order["shipments"]
            for package in shipment["packages"]
        ],
        "carrier": order["carrier_name"],  # deprecated in the schema, still served
        "carrier_id": order["carrier_id"],
        "carrier_name": order["carrier_name"],
        "scac": order["scac"],
        "shipping_method": order["shipping_method"],
        "shipping_method_id": order["shipping_method_id"],
        "shipping_method_name": order["shipping_method_name"],
        "ship_to_address": dict(order["ship_to_address"]),
        "order_line_items": [
            {"product_id": li["product_id"], "sku": li["sku"], "quantity": li["quantity"]} for li in order["line_items"]
        ],
        "additional_fields": {},
    }


def _endpoint(stream: str) -> str:
    if stream in CHILDREN:
        parent, segment = CHILDREN[stream]
        return f"GET /wms/{STREAMS[parent][0]}/{{{parent.rstrip('s')}_id}}/{segment}"
    return f"GET /wms/{STREAMS[stream][0]}"


def _product_inventory(product_id: str, n_inv: int) -> int:
    """Index of the inventory item that ships for a product (product c ↔ inventory c)."""
    return (int(product_id.rsplit("_", 1)[1]) - 1) % max(1, n_inv)


_LEVELS = ("awaiting", "onhand", "committed", "unfulfillable", "fulfillable", "unsellable", "sellable")


def _inventory_totals(record: dict[str, Any]) -> None:
    """Top-level quantities are the sums over warehouses (as Trackstar reports them)."""
    for field in _LEVELS:
        record[field] = sum(w[field] for w in record["inventory_by_warehouse_id"].values())


# -- touch mutations: each changes a field a user would see -----------------------------------


def _touch_inventory(record: dict[str, Any], r: random.Random) -> None:
    wid, levels = next(iter(record["inventory_by_warehouse_id"].items()))
    delta = r.randrange(1, 60)  # a restock: always a visible change
    levels["onhand"] += delta
    levels["fulfillable"] += delta
    levels["sellable"] += delta
    for loc in record["locations"]:
        if loc["warehouse_id"] == wid:
            loc["quantity"] = levels["onhand"]
    for lot in record["lots"]:
        if lot["warehouse_id"] == wid:
            lot["onhand"] = levels["onhand"]
    _inventory_totals(record)


def _touch_named(record: dict[str, Any], r: random.Random) -> None:
    record["name"] = _rev_name(record["name"], r)


def _touch_order(record: dict[str, Any], r: random.Random) -> None:
    status = record["status"]
    if status in _ORDER_FLOW[:-1]:
        record["status"] = _ORDER_FLOW[_ORDER_FLOW.index(status) + 1]
        record["raw_status"] = _raw(record["status"])
    else:
        record["tags"] = [*record["tags"], f"touched-{r.randrange(1000, 10000)}"]


def _touch_amount(record: dict[str, Any], r: random.Random) -> None:
    record["amount"] = round(record["amount"] + r.randrange(1, 500) / 100, 2)  # a re-rated charge


def _touch_reason(record: dict[str, Any], r: random.Random) -> None:
    record["reason"] = f"Corrected ({r.randrange(1000, 10000)})"


def _touch_quantity(record: dict[str, Any], r: random.Random) -> None:
    record["quantity"] = (record["quantity"] or 0) + r.randrange(1, 10)


def _touch_flow(flow: tuple[str, ...]) -> Callable[[dict[str, Any], random.Random], None]:
    def mutate(record: dict[str, Any], r: random.Random) -> None:
        status = record["status"]
        if status in flow[:-1]:
            record["status"] = flow[flow.index(status) + 1]
            record["raw_status"] = _raw(record["status"])
        else:
            record["notes"] = [*record["notes"], f"Updated by WMS ({r.randrange(1000, 10000)})"]
        for line in record["line_items"]:
            if record["status"] == "received":
                line["received_quantity"] = line["expected_quantity"]

    return mutate


_MUTATORS: dict[str, Callable[[dict[str, Any], random.Random], None]] = {
    "inventory": _touch_inventory,
    "products": _touch_named,
    "orders": _touch_order,
    "warehouses": _touch_named,
    "inbound_shipments": _touch_flow(_INBOUND_FLOW),
    "returns": _touch_flow(_INBOUND_FLOW),
    "bills": _touch_amount,
    "inventory_ledger": _touch_reason,
    "shipping_methods": _touch_named,
    "warehouse_customers": _touch_named,
    "labor_activities": _touch_quantity,
    "order_channels": _touch_named,
    "inbound_shipment_suppliers": _touch_named,
    "warehouse_locations": _touch_named,
}


class _Filter:
    """Parsed list query: the updated_date window, other predicates, limit, token, ids."""

    def __init__(self) -> None:
        self.window = Window()
        self.predicates: list[Callable[[dict[str, Any]], bool]] = []
        self.limit = MAX_LIMIT
        self.page_token: str | None = None
        self.ids: list[str] | None = None
        self.fingerprint_items: list[tuple[str, str]] = []

    def narrow(self, low: int | None = None, high: int | None = None) -> None:
        if low is not None:
            self.window.low = low if self.window.low is None else max(self.window.low, low)
        if high is not None:
            self.window.high = high if self.window.high is None else min(self.window.high, high)

    def predicate(self, record: dict[str, Any]) -> bool:
        return all(p(record) for p in self.predicates)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _compare(op: str, values: list[str], field: str, numeric: bool) -> Callable[[dict[str, Any]], bool]:
    """A predicate ``record[field] <op> values`` on text (dates sort as text in their fixed form)."""

    def key(v: str) -> Any:
        if numeric:
            try:
                return float(v)
            except ValueError:
                return v
        return v

    wanted = [key(v) for v in values]

    def test(record: dict[str, Any]) -> bool:
        raw = record.get(field)
        if raw is None and op in ("gt", "gte", "lt", "lte"):
            return False
        got = key(_as_text(raw))
        try:
            if op == "eq":
                return got == wanted[0]
            if op == "neq":
                return got != wanted[0]
            if op == "in":
                return got in wanted
            if op == "nin":
                return got not in wanted
            if op == "gt":
                return got > wanted[0]
            if op == "gte":
                return got >= wanted[0]
            if op == "lt":
                return got < wanted[0]
            return got <= wanted[0]
        except TypeError:  # number vs text: no match
            return False

    return test


def _id_of(prefix: str, index: int) -> str:
    return f"{prefix}{index + 1:06d}"


def _index_of(prefix: str, record_id: str) -> int | None:
    tail = record_id[len(prefix) :]
    return int(tail) - 1 if record_id.startswith(prefix) and tail.isdigit() else None


class TrackstarSandbox(VendorSandbox):
    """Trackstar's WMS API for any number of connections, each with lazily generated data."""

    name = "trackstar"

    def __init__(
        self,
        seed: int = 0,
        sizes: dict[str, int] | None = None,
        api_key: str = "sandbox-trackstar-key",
        connections: dict[str, str] | None = None,
        unsupported: dict[str, list[str]] | None = None,
        rate_limit_per_second: float | None = None,
        latency_seconds: float = 0.0,
        disabled: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        unknown = set(sizes or {}) - set(DEFAULT_SIZES)
        if unknown:
            raise ValueError(
                f"got sizes for unknown streams {sorted(unknown)}, expected some of {sorted(DEFAULT_SIZES)}"
            )
        self.seed = seed
        self.sizes = {**DEFAULT_SIZES, **(sizes or {})}
        self.api_key = api_key
        self.connections = dict(DEFAULT_CONNECTIONS if connections is None else connections)
        self.unsupported: dict[str, set[str]] = {}
        for cid, streams in (DEFAULT_UNSUPPORTED if unsupported is None else unsupported).items():
            # Accept stream names ("inbound_shipments") and URL segments ("inbound-shipments").
            self.unsupported[cid] = {SEGMENT_TO_STREAM.get(s, s) for s in streams}
        # Endpoints disabled for the organisation or connection: 403 (shared/vendors/README.md, and the
        # trackstarhq/documentation skill SKILL.md: "403 ...: the endpoint is disabled for this organization or
        # connection"). The WMS still implements them, so the connection keeps listing their actions.
        self.disabled: dict[str, set[str]] = {
            cid: {SEGMENT_TO_STREAM.get(s, s) for s in streams} for cid, streams in (disabled or {}).items()
        }
        self.rate_limit_per_second = rate_limit_per_second
        self.latency_seconds = latency_seconds
        self.tenants = {
            cid: _Tenant(seed, cid, token, INTEGRATIONS[n % len(INTEGRATIONS)], self.sizes)
            for n, (cid, token) in enumerate(self.connections.items())
        }
        self._by_token = {t.token: t for t in self.tenants.values()}
        self._gone: dict[str, _Tenant] = {}  # deleted connections (their events still name them)
        self._buckets: dict[str, tuple[float, float]] = {}  # token -> (tokens, last monotonic)
        self._bucket_lock = threading.Lock()
        self._link_tokens = 0
        self.webhook_secret = SANDBOX_WEBHOOK_SECRET
        self._svix = Webhook(self.webhook_secret)
        self._messages = 0
        self._msg_prefix = f"{int(time.time()):08x}{secrets.token_hex(6)}"  # this process's: time, then random
        self.webhooks = WebhookOutbox(sign=self._sign)
        self.routes[("POST", "/link/token")] = self._link_token
        self.routes[("POST", "/link/exchange")] = self._link_exchange
        self.routes[("GET", "/connections")] = self._list_connections

    # -- test helpers ---------------------------------------------------------------------------

    def _tenant(self, connection_id: str | None) -> _Tenant:
        cid = connection_id or next(iter(self.tenants))
        if cid not in self.tenants:
            raise KeyError(f"got connection '{cid}', expected one of {sorted(self.tenants)}")
        return self.tenants[cid]

    def _store(self, stream: str, connection_id: str | None) -> LazyStore:
        stream = SEGMENT_TO_STREAM.get(stream, stream)
        tenant = self._tenant(connection_id)
        if stream not in tenant.stores:
            raise KeyError(f"got stream '{stream}', expected one of {sorted(tenant.stores)}")
        return tenant.stores[stream]

    @staticmethod
    def _changed_through(stream: str) -> str:
        """The stream whose records change when ``stream``'s do: an order's packs change with the order."""
        stream = SEGMENT_TO_STREAM.get(stream, stream)
        return "orders" if stream == "order_packs" else stream

    def touch(self, stream: str, n: int, at: datetime, connection_id: str | None = None) -> list[str]:
        """Change ``n`` existing records (a visible field and ``updated_date = at``); their ids. A subscribed
        webhook endpoint gets one ``<type>.updated`` event per record (``self.webhooks``). Order packs are
        changed through their orders (the orders' ids are returned)."""
        stream = self._changed_through(stream)
        ids = self._store(stream, connection_id).touch(n, at, _MUTATORS[stream])
        self._announce(stream, ids, "updated", connection_id)
        return ids

    def add(self, stream: str, n: int, at: datetime, connection_id: str | None = None) -> list[str]:
        """Create ``n`` records created and updated at ``at``; their ids (and ``<type>.created`` webhooks).
        New warehouse locations go to the existing warehouses; new order packs come with new orders."""
        stream = self._changed_through(stream)
        ids = self._store(stream, connection_id).add(n, at)
        self._announce(stream, ids, "created", connection_id)
        return ids

    def revoke(self, connection_id: str) -> None:
        """Revoke a connection's access token: from now on it answers 401, as an invalid token does."""
        tenant = self._tenant(connection_id)
        with self._lock:
            self._by_token.pop(tenant.token, None)

    def children(self, stream: str, parent_id: str, connection_id: str | None = None) -> list[dict[str, Any]]:
        """What a child endpoint serves for one parent (deep copies, by id): the locations of a warehouse, or
        the one packs object of an order; ``[]`` for an unknown parent (the endpoint answers 404)."""
        if stream not in CHILDREN:
            raise KeyError(f"got child stream '{stream}', expected one of {sorted(CHILDREN)}")
        tenant = self._tenant(connection_id)
        parent = tenant.stores[CHILDREN[stream][0]].by_id(parent_id)
        if parent is None:
            return []
        if stream == "order_packs":
            return [order_packs(parent)]
        return sorted((r for r in tenant.stores[stream].all() if r["warehouse_id"] == parent_id), key=lambda r: r["id"])

    def _announce(self, stream: str, ids: list[str], change: str, connection_id: str | None) -> None:
        """Queue one webhook per changed record, as Trackstar sends them: the whole object in ``data``
        (openapi.json WmsOrdersUpdatedWebhookSchema and siblings: connection_id, integration_name,
        integration_type, event_type, data, previous_attributes)."""
        tenant = self._tenant(connection_id)
        store = self._store(stream, tenant.connection_id)
        if stream not in EVENT_PREFIX:
            return  # Trackstar documents no webhook for this resource
        for record_id in ids:
            record = store.by_id(record_id)
            msg_id = self._next_msg_id()
            self.webhooks.put(
                msg_id,
                {
                    "connection_id": tenant.connection_id,
                    "integration_name": tenant.integration,
                    "integration_type": "wms",
                    "event_type": f"{EVENT_PREFIX[stream]}.{change}",
                    "previous_attributes": {},
                    "data": record,
                },
            )

    def _next_msg_id(self) -> str:
        """A Svix message id: unique across sandbox processes too, as Svix's are (``msg_`` + a KSUID, time-ordered
        and random), so a warehouse that outlives one sandbox never takes a new message for a replay of an old
        one. [unconfirmed] the exact KSUID alphabet: the receiver treats the id as an opaque string."""
        with self._lock:
            self._messages += 1
            return f"msg_{self._msg_prefix}{self._messages:08x}"

    def announce_connection(self, event_type: str, connection_id: str, data: dict[str, Any] | None = None) -> None:
        """Queue a connection event with the body openapi.json gives it (``data`` overrides): connection.created
        → ConnectionCreatedSchema {created_date, access_token}; connection.deleted → ConnectionDeletedSchema
        {deleted_date}; connection.historical-sync-completed → HistoricalSyncCompletedSchema {oldest_data_date,
        newest_data_date, resource} (resource "orders" unless ``data`` says otherwise)."""
        tenant = self.tenants.get(connection_id) or self._gone.get(connection_id)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if data is None:
            if event_type == "connection.created":
                data = {"created_date": now, "access_token": tenant.token if tenant else ""}
            elif event_type == "connection.deleted":
                data = {"deleted_date": now}
            elif event_type == "connection.historical-sync-completed":
                data = {"oldest_data_date": "2026-10-01T00:00:00Z", "newest_data_date": now, "resource": "orders"}
            else:
                data = {}
        msg_id = self._next_msg_id()
        self.webhooks.put(
            msg_id,
            {
                "connection_id": connection_id,
                "integration_name": tenant.integration if tenant else None,
                "integration_type": "general",  # GeneralConnections*WebhookSchema examples
                "event_type": event_type,
                "data": data,
            },
        )

    def connect(self, connection_id: str, token: str | None = None) -> str:
        """A customer links a new WMS now: it is listed, its auth code (returned, ``code_<id>``) exchanges for
        its token, and a ``connection.created`` event carrying the token is queued, as Trackstar sends one."""
        if connection_id in self.tenants:
            raise ValueError(f"connection '{connection_id}' exists")
        token = token or f"tok-{mix64(self.seed, 'token', connection_id):016x}"
        n = len(self.tenants) + len(self._gone)
        tenant = _Tenant(self.seed, connection_id, token, INTEGRATIONS[n % len(INTEGRATIONS)], self.sizes)
        with self._lock:
            self.connections[connection_id] = token
            self.tenants[connection_id] = tenant
            self._by_token[token] = tenant
        self.announce_connection("connection.created", connection_id)
        return f"code_{connection_id}"

    def relink(self, connection_id: str) -> str:
        """The customer links the same WMS again: a new token (the old one stays refused); its auth code."""
        tenant = self._tenant(connection_id)
        with self._lock:
            self._by_token.pop(tenant.token, None)
            tenant.token = f"tok-{mix64(self.seed, 'relink', tenant.token):016x}"
            self.connections[connection_id] = tenant.token
            self._by_token[tenant.token] = tenant
        return f"code_{connection_id}"

    def delete_connection(self, connection_id: str) -> None:
        """The connection is deleted in Trackstar: no longer listed, its token refused, ``connection.deleted``
        queued."""
        tenant = self._tenant(connection_id)
        with self._lock:
            self._gone[connection_id] = self.tenants.pop(connection_id)
            self.connections.pop(connection_id, None)
            self._by_token.pop(tenant.token, None)
        self.announce_connection("connection.deleted", connection_id)

    def _sign(self, msg_id: str, body: bytes) -> dict[str, str]:
        # Signed by the svix library exactly as Svix signs (v1 HMAC-SHA256 over "id.timestamp.body").
        now = datetime.now(UTC)
        return {
            "svix-id": msg_id,
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": self._svix.sign(msg_id, now, body.decode()),
        }

    def truth(self, stream: str, connection_id: str | None = None) -> list[dict[str, Any]]:
        """Every current record (deep copies) sorted by id; ``[]`` where the stream answers 501 (or 403).
        Warehouse locations: all of them, as their endpoints serve them; order packs: see ``children``."""
        stream = SEGMENT_TO_STREAM.get(stream, stream)
        tenant = self._tenant(connection_id)
        if stream == "order_packs":
            raise KeyError("order packs have no id: ask children('order_packs', order_id)")
        if stream in self.unsupported.get(tenant.connection_id, set()) | self.disabled.get(tenant.connection_id, set()):
            return []
        return sorted(self._store(stream, tenant.connection_id).all(), key=lambda rec: rec["id"])

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars pointing the trackstar connector at this sandbox."""
        return {
            "TRACKSTAR_BASE_URL": base_url,
            "TRACKSTAR_API_KEY": self.api_key,
            "TRACKSTAR_ACCESS_TOKEN": ",".join(f"{cid}={token}" for cid, token in self.connections.items()),
            "TRACKSTAR_WEBHOOK_SECRET": self.webhook_secret,
        }

    # -- plumbing -------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        return super().handle(request)

    def route(self, request: httpx.Request) -> Callable[[httpx.Request], httpx.Response] | None:
        found = self.routes.get((request.method, request.url.path))
        if found is not None:
            return found
        parts = request.url.path.strip("/").split("/")
        if request.method == "GET" and parts[0] == "wms" and len(parts) in (2, 3, 4):
            # A list first (/wms/orders/channels is a list, not the order "channels"), then a child list
            # (/wms/warehouses/{id}/locations), then an item.
            listed = SEGMENT_TO_STREAM.get("/".join(parts[1:]))
            if listed is not None:
                return lambda req: self._list(req, listed)
            child = next(
                (
                    c
                    for c, (p, seg) in CHILDREN.items()
                    if len(parts) == 4 and (STREAMS[p][0], seg) == (parts[1], parts[3])
                ),
                None,
            )
            if child == "order_packs":
                return lambda req: self._packs(req, parts[2])
            if child is not None:
                return lambda req: self._list(req, child, parent_id=parts[2])
            if len(parts) == 3 and parts[1] in SEGMENT_TO_STREAM:
                return lambda req: self._item(req, SEGMENT_TO_STREAM[parts[1]], parts[2])
        if request.method == "GET" and len(parts) == 2 and parts[0] == "connections":
            return lambda req: self._get_connection(req, parts[1])
        return None

    @staticmethod
    def _error(
        status: int, message: str, origin: str = "trackstar", detail: dict[str, Any] | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"error": message, "origin": origin}
        if detail is not None:
            body["detail"] = detail
        return json_response(status, body)

    def _check_key(self, request: httpx.Request) -> httpx.Response | None:
        key = request.headers.get("x-trackstar-api-key")
        if not key:
            return self._error(401, "Missing x-trackstar-api-key header")
        if key != self.api_key:
            return self._error(401, "Invalid API key")
        return None

    def _authorise(
        self, request: httpx.Request, stream: str
    ) -> tuple[_Tenant | None, httpx.Response | None, dict[str, str]]:
        """API key, access token, rate limit and capability, in the order Trackstar checks them."""
        denied = self._check_key(request)
        if denied is not None:
            return None, denied, {}
        token = request.headers.get("x-trackstar-access-token")
        tenant = self._by_token.get(token or "")
        if tenant is None:
            return None, self._error(401, "Missing or invalid x-trackstar-access-token"), {}
        limited, headers = self._take_token(tenant.token)
        if limited is not None:
            return None, limited, {}
        name = ACTIONS.get(stream) or f"GET {request.url.path}"
        if stream in self.disabled.get(tenant.connection_id, set()):
            # [unconfirmed] the body: the documented example is a write's ("create_return is disabled for this
            # connection"), origin trackstar since Trackstar, not the WMS, refuses.
            return None, self._error(403, f"{name} is disabled for this connection"), {}
        if stream in self.unsupported.get(tenant.connection_id, set()):
            # The documented 501 body ("About the API": "Endpoint get_returns is not implemented for Cool WMS").
            return (
                None,
                self._error(501, f"Endpoint {name} is not implemented for {tenant.integration}", origin="integration"),
                {},
            )
        return tenant, None, headers

    def _take_token(self, token: str) -> tuple[httpx.Response | None, dict[str, str]]:
        """Token bucket per access token: capacity = rate, refilled at rate per second."""
        rate = self.rate_limit_per_second
        if not rate:
            return None, {}
        capacity = max(1.0, rate)
        now = time.monotonic()
        with self._bucket_lock:
            tokens, last = self._buckets.get(token, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[token] = (tokens, now)
                full_in = (capacity - tokens) / rate  # reset = when the bucket is full again
                return None, {
                    "x-ratelimit-limit": f"{rate:g}",
                    "x-ratelimit-remaining": str(int(tokens)),
                    "x-ratelimit-reset": str(math.ceil(time.time() + full_in)),
                }
            self._buckets[token] = (tokens, now)
        wait = math.ceil((1.0 - tokens) / rate * 1000) / 1000  # decimal seconds, rounded up to the ms
        response = self.rate_limited_response(
            retry_after=wait, limit=math.ceil(rate), reset_epoch=math.ceil(time.time() + wait)
        )
        response.headers["x-ratelimit-limit"] = f"{rate:g}"
        return response, {}

    # -- list and item endpoints ----------------------------------------------------------------

    def _parse(self, request: httpx.Request, stream: str) -> tuple[_Filter, dict[str, list[str]]]:
        f = _Filter()
        errors: dict[str, list[str]] = {}
        allowed = (*DATE_FIELDS, *FILTER_FIELDS[stream])
        for name, value in request.url.params.multi_items():
            if name == "limit":
                try:
                    f.limit = int(value)
                except ValueError:
                    errors[name] = ["Not a valid integer."]
                    continue
                if not 1 <= f.limit <= MAX_LIMIT:
                    errors[name] = [f"Must be greater than or equal to 1 and less than or equal to {MAX_LIMIT}."]
                continue
            if name == "page_token":
                f.page_token = value
                continue
            if name in ("ids[in]", "ids"):
                f.ids = [*(f.ids or []), *[v for v in value.split(",") if v]]
                continue
            m = _PARAM_RE.match(name)
            if m is None:
                errors[name] = ["Unknown parameter."]
                continue
            field, op = m.group(1), m.group(2) if m.group(2) is not None else "eq"
            if op not in OPS:
                errors[name] = [f"Unknown operator '{op}'; expected one of {', '.join(OPS)}."]
                continue
            if field not in allowed:
                errors[name] = [f"Unknown filter field '{field}'; expected one of {', '.join(allowed)}."]
                continue
            values = value.split(",") if op in ("in", "nin") else [value]
            if op in ("in", "nin") and len(values) > MAX_IN_VALUES:
                errors[name] = [f"At most {MAX_IN_VALUES} values."]
                continue
            f.fingerprint_items.append((name, value))
            if field in DATE_FIELDS:
                stamps = [parse_iso(v) for v in values]
                if any(s is None for s in stamps):
                    errors[name] = ["Not a valid datetime; the format must be YYYY-MM-DDTHH:MM:SSZ."]
                    continue
                if field == "updated_date" and op in ("eq", "gt", "gte", "lt", "lte"):
                    # Whole seconds: gt t == gte t+1, lte t == lt t+1, eq t == [t, t+1).
                    t = stamps[0]
                    assert t is not None
                    low = {"eq": t, "gt": t + 1, "gte": t}.get(op)
                    high = {"eq": t + 1, "lt": t, "lte": t + 1}.get(op)
                    f.narrow(low, high)
                    continue
                f.predicates.append(_compare(op, values, field, numeric=False))
            else:
                f.predicates.append(_compare(op, values, field, numeric=False))
        if f.ids is not None and len(f.ids) > MAX_IN_VALUES:
            errors["ids[in]"] = [f"At most {MAX_IN_VALUES} values."]
        return f, errors

    def _list(self, request: httpx.Request, stream: str, parent_id: str | None = None) -> httpx.Response:
        tenant, denied, headers = self._authorise(request, stream)
        if denied is not None:
            return denied
        assert tenant is not None
        if parent_id is not None:
            parent_stream = CHILDREN[stream][0]
            if tenant.stores[parent_stream].by_id(parent_id) is None:
                return self._not_found(parent_stream, parent_id)
        f, errors = self._parse(request, stream)
        if errors:
            return json_response(422, {"error": "Validation error", "origin": "trackstar", "detail": {"query": errors}})
        if parent_id is not None:
            # A warehouse's locations only; the token is bound to the warehouse like any filter.
            f.predicates.append(lambda record: record["warehouse_id"] == parent_id)
            f.fingerprint_items.append(("warehouse_id", parent_id))
        store = tenant.stores[stream]
        if f.ids is not None:
            # ``ids[in]`` overrides every other filter (documented): one page, no token.
            found = [rec for rec in (store.by_id(rid) for rid in dict.fromkeys(f.ids)) if rec is not None]
            found = [rec for rec in found if parent_id is None or rec["warehouse_id"] == parent_id]
            found.sort(key=lambda rec: (rec["updated_date"], rec["id"]))
            return json_response(200, {"data": found, "next_token": None, "total_count": len(found)}, headers)
        fp = fingerprint(tenant.connection_id, stream, sorted(f.fingerprint_items))
        after: Key | None = None
        previous: Key | None = None
        if f.page_token is not None:
            decoded = decode_token(f.page_token)
            if decoded is None:
                return json_response(
                    422,
                    {
                        "error": "Invalid page_token",
                        "origin": "trackstar",
                        "detail": {"query": {"page_token": ["Not a page token issued by this API."]}},
                    },
                )
            after, previous, token_fp = decoded
            if token_fp != fp:
                return json_response(
                    422,
                    {
                        "error": "page_token does not match the filters",
                        "origin": "trackstar",
                        "detail": {
                            "query": {"page_token": ["Repeat every filter of the first request with page_token."]}
                        },
                    },
                )
        predicate = f.predicate if f.predicates else None
        records, last, more = store.page(f.window, after, f.limit, predicate)
        next_token = encode_token(last, after, fp) if more and last is not None else None
        if self.faults.take(("duplicate",), request.url.path):
            # Overlap as when data shifts mid-paging: the first records of the previous page come
            # again (on a first page: its own first records, repeated at the end). Progress is
            # unchanged: next_token still points after this page's last new record.
            self.count("duplicate")
            if f.page_token is not None:
                again, _, _ = store.page(f.window, previous, DUPLICATE_OVERLAP, predicate)
                records = [*again, *records]
            else:
                records = [*records, *records[:DUPLICATE_OVERLAP]]
        return json_response(200, {"data": records, "next_token": next_token, "total_count": len(records)}, headers)

    def _item(self, request: httpx.Request, stream: str, record_id: str) -> httpx.Response:
        tenant, denied, headers = self._authorise(request, stream)
        if denied is not None:
            return denied
        assert tenant is not None
        record = tenant.stores[stream].by_id(record_id)
        if record is None:
            return self._error(404, f"{STREAMS[stream][0]} '{record_id}' not found")
        return json_response(200, {"data": record}, headers)

    def _not_found(self, stream: str, record_id: str) -> httpx.Response:
        # HTTPError {error, id}: the 404 of the child paths in openapi.json.
        return json_response(
            404, {"error": f"{STREAMS[stream][0]} '{record_id}' not found", "origin": "trackstar", "id": record_id}
        )

    def _packs(self, request: httpx.Request, order_id: str) -> httpx.Response:
        """GET /wms/orders/{order_id}/packs → {"data": OrderPackSchema}: no query parameters, no paging."""
        tenant, denied, headers = self._authorise(request, "order_packs")
        if denied is not None:
            return denied
        assert tenant is not None
        unknown = {name: ["Unknown parameter."] for name in request.url.params}
        if unknown:
            return json_response(
                422, {"error": "Validation error", "origin": "trackstar", "detail": {"query": unknown}}
            )
        order = tenant.stores["orders"].by_id(order_id)
        if order is None:
            return self._not_found("orders", order_id)
        return json_response(200, {"data": order_packs(order)}, headers)

    # -- link flow and connections --------------------------------------------------------------

    def _link_token(self, request: httpx.Request) -> httpx.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        with self._lock:
            self._link_tokens += 1
            n = self._link_tokens
        return json_response(200, {"link_token": f"link-sandbox-{mix64(self.seed, 'link', n):016x}"})

    def _link_exchange(self, request: httpx.Request) -> httpx.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        body: dict[str, Any] = {}
        raw = request.content
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                # The getting-started guide posts form data (``data={"auth_code": ...}``).
                body = dict(parse_qsl(raw.decode(errors="replace")))
        code = body.get("auth_code") if isinstance(body, dict) else None
        if not code:
            return json_response(
                422,
                {
                    "error": "Validation error",
                    "origin": "trackstar",
                    "detail": {"json": {"auth_code": ["Missing data for required field."]}},
                },
            )
        name = str(code).removeprefix("code_")
        tenant = self.tenants.get(name) or self.tenants.get(f"conn_{name}")
        if tenant is None:
            return json_response(
                422,
                {
                    "error": "Invalid auth_code",
                    "origin": "trackstar",
                    "detail": {"json": {"auth_code": ["Unknown or expired auth code."]}},
                },
            )
        return json_response(
            200,
            {
                "access_token": tenant.token,
                "connection_id": tenant.connection_id,
                "integration_name": tenant.integration,
                "customer_id": body.get("customer_id"),
                "available_actions": self._actions(tenant),
                # Deprecated in the schema ("GET /inventory" in its example); served for old clients.
                "available_endpoints": [_endpoint(stream) for stream in self._supported(tenant) if stream in ACTIONS],
            },
        )

    def _supported(self, tenant: _Tenant) -> list[str]:
        off = self.unsupported.get(tenant.connection_id, set())
        return [stream for stream in (*STREAMS, *CHILDREN) if stream not in off]

    def _actions(self, tenant: _Tenant) -> list[str]:
        """What the connection's WMS implements, by openapi.json's action names (a disabled endpoint is still
        implemented: it answers 403, not 501, and stays listed)."""
        return [ACTIONS[stream] for stream in self._supported(tenant) if stream in ACTIONS]

    def _connection(self, tenant: _Tenant) -> dict[str, Any]:
        actions = self._actions(tenant)
        return {
            "connection_id": tenant.connection_id,
            "integration_name": tenant.integration,
            "customer_id": None,
            "created_at": "2026-09-15T12:00:00Z",
            "last_used": None,
            "times_used": 0,
            "latest_sync": None,
            "sync_schedules": [],
            "errors": [],
            "available_actions": actions,
            "available_endpoints": actions,
            "integration_type": "wms",
            "webhooks_disabled": False,
        }

    def _list_connections(self, request: httpx.Request) -> httpx.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        data = [self._connection(t) for t in self.tenants.values()]
        return json_response(200, {"data": data, "next_token": None, "total_count": len(data)})

    def _get_connection(self, request: httpx.Request, connection_id: str) -> httpx.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        tenant = self.tenants.get(connection_id)
        if tenant is None:
            return self._error(404, f"connection '{connection_id}' not found")
        return json_response(200, {"data": self._connection(tenant)})
