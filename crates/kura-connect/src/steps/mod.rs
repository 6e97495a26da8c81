//! Step kinds that live in modules of their own: their document part, the
//! checks on save and how the engine runs them. [`email`] and [`approval`]
//! reach people; [`apps`] acts on records of the team's hosted apps, as a
//! service account; [`looping`] runs a step once per item of a list.

pub mod approval;
pub(crate) mod apps;
pub mod email;
pub(crate) mod looping;
