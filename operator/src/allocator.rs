//! The C allocator's arena limit. glibc gives every thread that allocates its own arena (up to
//! 8 × cores), and memory freed on one worker thread stays in that thread's arena: with 1,000
//! fleets the operator held three arenas of 11–19 MiB each for a heap that peaked at 31 MiB (heaptrack,
//! `fleet_load --real-api`). The operator spends most of its time waiting on the API server, so one
//! shared arena costs nothing measurable in lock contention and saves that slack.

/// Limits glibc's malloc to one arena unless `MALLOC_ARENA_MAX` is set (the operator's user then
/// decides). Call before the runtime starts threads. No effect with other C libraries.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc tunable; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
