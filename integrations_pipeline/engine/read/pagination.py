"""Paginator types, registered by snake_case name.

A paginator is asked for the inputs of the first page, then, after each page, for the inputs of the
next one or ``None`` to stop. Inputs are query parameters for REST streams and GraphQL variables for
GraphQL streams; the extractor decides where they go, so one paginator type serves both.

Every type stops on an empty token (or an empty/short page) and raises ``PaginationLoopError`` when a
token repeats, as meltano's SDK does, or (offset and page-number types, which have no token) when a
full page repeats an earlier one: a vendor that hands back the same token, or ignores the offset,
would otherwise loop forever while appearing healthy.

Types: ``next_token`` (Trackstar ``next_token`` → ``page_token``), ``offset`` (offset/limit),
``page_number``, ``graphql_cursor`` (a cursor variable fed from a response path), ``single`` (one page).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..auth import dig
from ..errors import PaginationLoopError
from ..models import Frozen
from ..registry import Registry

PageInputs = dict[str, Any]


class Paginator:
    """Runtime base. Subclasses implement ``first`` and ``next``."""

    def __init__(self, config: Frozen):
        self.config = config
        self._seen: set[str] = set()

    def first(self) -> PageInputs:
        return {}

    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        raise NotImplementedError

    def _check_token(self, token: Any, path: str) -> None:
        key = repr(token)
        if key in self._seen:
            raise PaginationLoopError(f"loop detected: token {token!r} was already followed", path=path)
        self._seen.add(key)

    def _check_page(self, records: list[dict], what: str) -> None:
        """Offset and page-number vendors have no token to repeat; a vendor that ignores the offset
        serves the same full page forever. A page whose first and last records equal an earlier
        page's is that loop (two records keep the check cheap on 1,000-record pages)."""
        if not records:
            return
        key = repr((records[0], records[-1]))
        if key in self._seen:
            raise PaginationLoopError(
                f"loop detected: a page repeats an earlier page; the vendor may be ignoring '{what}'", path=what
            )
        self._seen.add(key)


PAGINATORS: Registry[Paginator] = Registry("paginator")


class SingleConfig(Frozen):
    type: Literal["single"]


@PAGINATORS.register("single", SingleConfig)
class SinglePage(Paginator):
    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        return None


class NextTokenConfig(Frozen):
    type: Literal["next_token"]
    token_path: str = Field(description="Dotted path of the next token in the response body.")
    token_param: str = Field(description="Request input that carries the token back.")
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)


@PAGINATORS.register("next_token", NextTokenConfig)
class NextTokenPagination(Paginator):
    config: NextTokenConfig

    def first(self) -> PageInputs:
        c = self.config
        return {c.page_size_param: c.page_size} if c.page_size_param and c.page_size else {}

    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        token = dig(body, self.config.token_path)
        if token in (None, ""):
            return None
        self._check_token(token, self.config.token_path)
        return {**self.first(), self.config.token_param: token}


class OffsetConfig(Frozen):
    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, gt=0)
    total_path: str | None = Field(default=None, description="Optional path of the total record count.")


@PAGINATORS.register("offset", OffsetConfig)
class OffsetPagination(Paginator):
    config: OffsetConfig

    def __init__(self, config):
        super().__init__(config)
        self.offset = 0

    def first(self) -> PageInputs:
        return {self.config.offset_param: 0, self.config.limit_param: self.config.limit}

    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        c = self.config
        if len(records) < c.limit:  # short or empty page: the collection is exhausted
            return None
        self._check_page(records, c.offset_param)
        self.offset += len(records)
        if c.total_path is not None:
            total = dig(body, c.total_path)
            if isinstance(total, int) and self.offset >= total:
                return None
        return {c.offset_param: self.offset, c.limit_param: c.limit}


class PageNumberConfig(Frozen):
    type: Literal["page_number"]
    page_param: str = "page"
    start_page: int = 1
    page_size_param: str | None = "page_size"
    page_size: int = Field(default=100, gt=0)
    total_pages_path: str | None = None


@PAGINATORS.register("page_number", PageNumberConfig)
class PageNumberPagination(Paginator):
    config: PageNumberConfig

    def __init__(self, config):
        super().__init__(config)
        self.page = config.start_page

    def _inputs(self) -> PageInputs:
        c = self.config
        inputs: PageInputs = {c.page_param: self.page}
        if c.page_size_param:
            inputs[c.page_size_param] = c.page_size
        return inputs

    def first(self) -> PageInputs:
        return self._inputs()

    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        c = self.config
        if len(records) < c.page_size:
            return None
        self._check_page(records, c.page_param)
        if c.total_pages_path is not None:
            total = dig(body, c.total_pages_path)
            if isinstance(total, int) and self.page >= total + c.start_page - 1:
                return None
        self.page += 1
        return self._inputs()


class GraphqlCursorConfig(Frozen):
    type: Literal["graphql_cursor"]
    cursor_variable: str = Field(description="GraphQL variable that receives the cursor, e.g. 'after'.")
    cursor_path: str = Field(description="Dotted path of the next cursor in the response.")
    has_next_path: str | None = Field(default=None, description="Optional boolean 'more pages' flag.")
    page_size_variable: str | None = None
    page_size: int | None = Field(default=None, gt=0)


@PAGINATORS.register("graphql_cursor", GraphqlCursorConfig)
class GraphqlCursorPagination(Paginator):
    config: GraphqlCursorConfig

    def first(self) -> PageInputs:
        c = self.config
        inputs: PageInputs = {c.cursor_variable: None}
        if c.page_size_variable and c.page_size:
            inputs[c.page_size_variable] = c.page_size
        return inputs

    def next(self, body: Any, records: list[dict]) -> PageInputs | None:
        c = self.config
        if c.has_next_path is not None and not dig(body, c.has_next_path):
            return None
        cursor = dig(body, c.cursor_path)
        if cursor in (None, ""):
            return None
        self._check_token(cursor, c.cursor_path)
        return {**self.first(), c.cursor_variable: cursor}
