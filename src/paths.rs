//! Small facts about paths that several modules need, written once.

use std::path::Path;

/// The folder a file is in, as a path to open or create: `.` for a bare
/// file name (whose `parent()` is the empty path, which neither
/// `read_dir` nor `File::open` accept).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
