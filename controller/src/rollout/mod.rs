//! The rollout state machine (DESIGN §3.4) as data: `(state, event, now) -> (state, commands)`.
//! Pure: no I/O, no clock reads; the edge executes the commands.
//!
//! STUB: being written on its own branch.
