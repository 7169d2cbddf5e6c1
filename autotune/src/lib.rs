//! kiln-autotune: schedule search and the tuning database (filled by the autotune issue).
