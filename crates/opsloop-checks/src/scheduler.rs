//! The scheduler: every check on its interval (written next).
