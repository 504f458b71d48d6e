//! The commands' side: how answers are shown to a technician (text) or a
//! script (`--json`).

pub mod json;
pub mod render;
