//! Step kinds that act on other parts of Kura or run other steps:
//! [`apps`] (records of the team's hosted apps, as a service account) and
//! [`looping`] (a step once per item of a list).

pub(crate) mod apps;
pub(crate) mod looping;
