//! POSIX backend: maps MS-FSA operations onto a Linux file system, as the authenticated user.
