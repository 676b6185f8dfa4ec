//! spineseg-data (being written)
