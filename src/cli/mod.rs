//! Every `regate` command but `regate run`: the policy authoring tools (`regate policy
//! test|eval|check|replay`), `regate audit verify`, and `regate dev-certs`.
//!
//! These read the runtime's rooms (policy, request, audit) to do what the proxy would do,
//! offline; the runtime never reads this room.

pub mod approve;
pub mod audit;
pub mod devcerts;
mod out;
pub mod policy;
