//! kiln-codegen: kernel IR, templates, backends and runtime (filled by the codegen issue).
