//! Networking that parks the tasklet instead of the thread: drop-in replacements for
//! `std::net` and `std::os::unix::net`, method for method.
