//! spineseg-metrics (being written)
