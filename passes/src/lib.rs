//! kiln-passes: equality-saturation rewrites over the graph IR (filled by the eqsat issue).
