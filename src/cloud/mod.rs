//! Uploading enrollments to the cloud: one error taxonomy for both vendors.

pub mod sign;
