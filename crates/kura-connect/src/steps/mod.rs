//! Step kinds that live in modules of their own: their document part, the
//! checks on save and how the engine runs them.

pub mod approval;
pub mod email;
