"""What workers cost: a price table per backend kind.

AWS Lambda's published x86 prices (us-east-1): $0.0000166667 per GB-second and $0.20 per
million requests. The gateway, HTTP workers and the embedded engine are priced like it, so
that runs on any backend compare; a GB-second is a worker's memory size times how long it
ran, whether it computed or waited.
"""

from __future__ import annotations

from typing import NamedTuple


class Price(NamedTuple):
    gb_s: float  # USD per GB-second
    request: float  # USD per invocation

    def usd(self, gb_s: float, requests: int) -> float:
        return gb_s * self.gb_s + requests * self.request


LAMBDA_X86 = Price(gb_s=0.0000166667, request=0.20 / 1_000_000)

PRICES: dict[str, Price] = {
    "lambda": LAMBDA_X86,
    "gateway": LAMBDA_X86,
    "http": LAMBDA_X86,
    "local": LAMBDA_X86,
}


def price_of(backend: str) -> Price:
    """The price table of a backend kind (Lambda's for one not listed)."""
    return PRICES.get(backend, LAMBDA_X86)
