//! Named fault-injection points for the crash tests.
//!
//! A guarantee such as "a complete output exists at every instant of a
//! commit" can only be tested by stopping the process at each step of it.
//! [`point`] kills the process with `SIGKILL` (no destructor, no cleanup,
//! no core file) when the environment variable `SIEVE_FAULT_POINT` names
//! that point, and does nothing otherwise; the tests in `tests/it/reliability.rs` set it.
//! The variable is read at each point, which costs a few hundred
//! nanoseconds on a path taken a handful of times per job.

/// The environment variable that names the point at which to abort.
pub const ENV: &str = "SIEVE_FAULT_POINT";

/// Kills the process here when `SIEVE_FAULT_POINT` equals `name`.
pub fn point(name: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        eprintln!("sieve: {ENV}={name}: killed here");
        // SAFETY: raise has no preconditions; SIGKILL does not return.
        unsafe { libc::raise(libc::SIGKILL) };
        std::process::abort();
    }
}
