"""The four order-book analyses as pure operators (definitions in each module's docstring).

- :mod:`.support_resistance` — price bins, size-weighted prices of the two strongest bins per side;
- :mod:`.large_orders` — large levels per side, their totals, and the held bullish/bearish trend;
- :mod:`.depth_anomaly` — depth within the band vs its sliding window, largest |z|;
- :mod:`.liquidity` — notional within the band / its long-window median.

Shared helpers: :mod:`.params` (the frozen parameters), :mod:`.index` (the incremental numeric index beside
the book), :mod:`.windows` (bucketed event-time windows), :mod:`.alerts` (transitions, cooldown, email
jobs); :mod:`.engine` ties them to the book operator per instrument.
"""

from operators.analysis.alerts import AlertTracker, email_jobs
from operators.analysis.engine import AnalysisOutput, InstrumentAnalyzer
from operators.analysis.params import AnalysisParams, default_bin_width

__all__ = [
    "AlertTracker",
    "AnalysisOutput",
    "AnalysisParams",
    "InstrumentAnalyzer",
    "default_bin_width",
    "email_jobs",
]
