"""quality_report and its blocking checks (placeholder until the quality issue lands)."""

QUALITY_ASSETS: list = []
QUALITY_CHECKS: list = []
