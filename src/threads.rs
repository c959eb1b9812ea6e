//! Threads feedsync starts. Every one is scoped (it cannot outlive the
//! work it serves) and named, so profilers and `top -H` can tell them
//! apart: the diff's splitter and parsers, and the delivery courier.

/// Spawns a scoped thread with a name, so profilers and `top -H` can tell
/// the threads apart.
pub fn named<'s, 'e, F: FnOnce() + Send + 's>(
    scope: &'s std::thread::Scope<'s, 'e>,
    name: &str,
    f: F,
) {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, f)
        .expect("spawning a thread");
}
