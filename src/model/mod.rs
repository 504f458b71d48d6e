//! The domain every layer shares, and nothing else: the vendors and their
//! rules, the enrollment record and its upload progress, the measured face,
//! the camera's pixel layouts, and the error codes with their exit codes.
//!
//! This is the house's lowest floor but for [`crate::clock`] and
//! [`crate::trust`]: it imports nothing else of the crate, and every other
//! module imports it downward (see docs/design.md).

mod consent;
mod enrollment;
mod error;
mod face;
mod pixel;
mod provider;
pub mod rules;

pub use consent::{
    check_reference, Consent, ConsentGiven, ConsentScope, ConsentVia, Sealed, MAX_REFERENCE_BYTES,
};
pub use enrollment::{
    CloudDeletion, Enrollment, EntryState, ErrorClass, Group, ImageMeta, LastError, Receipt, Task,
    UploadCode, UploadProgress, MAX_IMAGES,
};
pub use error::{exit, ErrorCode, Failure};
pub use face::{FaceScores, Landmarks, Point, Pose};
pub use pixel::PixelFormat;
pub use provider::{ImageLimits, Provider};
