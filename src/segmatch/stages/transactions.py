"""Transactions → customers: one row per customer of recency, frequency, spend, tenure and
returns, aggregated from order lines."""

from __future__ import annotations

from datetime import datetime, timedelta

from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import Expr, col, when
from segmatch.engines.types import TransactionColumns

AMOUNT, RETURN = "__segmatch_amount", "__segmatch_return"


def customers_from_transactions(
    engine: Engine, frame: Frame, *, columns: TransactionColumns
) -> Frame:
    """Per customer: days since the last purchase (``recency_days``) and since the first
    (``tenure_days``) before the as-of date (the config's, else the day after the last line),
    purchases (``frequency``: distinct invoices, else lines), spend (``monetary_total``,
    ``monetary_avg``), the share of lines that are returns, and distinct categories bought.

    A line is a return when its amount is negative or its invoice starts with the
    cancellation prefix; returns count against spend, or are dropped first.
    """
    c = columns
    if c.amount is not None:
        amount = col(c.amount).as_float()
    elif c.quantity is not None and c.unit_price is not None:
        amount = col(c.quantity).times(col(c.unit_price)).as_float()
    else:
        raise ValueError("a transactions table needs an amount, or a quantity and a unit price")
    is_return = amount.lt(0.0)
    if c.cancellation_prefix and c.invoice:
        is_return = is_return.or_(col(c.invoice).as_text().starts_with(c.cancellation_prefix))
    lines = engine.with_columns(frame, {AMOUNT: amount, RETURN: is_return.fill_null(False)})
    if c.drop_returns:
        lines = engine.filter(lines, col(RETURN).not_())
    as_of = c.as_of or _day_after_last(engine, lines, c.timestamp)
    purchase = col(RETURN).not_()
    frequency = (
        when([(purchase, col(c.invoice))]).n_unique() if c.invoice else purchase.as_float().sum()
    )
    aggregations: dict[str, Expr] = {
        "recency_days": col(c.timestamp).max().days_until(as_of),
        "frequency": frequency.as_float(),
        "monetary_total": col(AMOUNT).sum(),
        "tenure_days": col(c.timestamp).min().days_until(as_of),
        "return_share": col(RETURN).as_float().mean(),
    }
    if c.category:
        aggregations["distinct_categories"] = (
            when([(purchase, col(c.category))]).n_unique().as_float()
        )
    customers = engine.aggregate(lines, aggregations, by=[c.id_column])
    average = col("monetary_total").divided_by(col("frequency").larger_of(1.0))
    return engine.hold(engine.with_columns(customers, {"monetary_avg": average}))


def _day_after_last(engine: Engine, lines: Frame, timestamp: str) -> datetime:
    last = engine.to_arrow(engine.aggregate(lines, {"last": col(timestamp).max()}))
    return last.column("last")[0].as_py() + timedelta(days=1)
