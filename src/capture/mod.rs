//! From the camera to a queued enrollment: frame sources ([`source`]),
//! bounded decoding ([`frame`]), face detection ([`detect`]), scoring and
//! rejection reasons ([`quality`]), grey images shrunk by area
//! ([`scale`]), the best shot of a burst ([`burst`]),
//! JPEG within each vendor's limits ([`encode`]), and the pipeline that
//! ties them together ([`enroll`]).

pub mod burst;
pub mod detect;
pub mod encode;
pub mod enroll;
pub mod frame;
pub mod landmarks;
pub mod quality;
pub mod scale;
pub mod source;

/// Where the rustface package's sample group photo was on the build machine
/// (empty if it was not found): the demo's and the tests' photo. A path,
/// not the picture: nothing of it is embedded.
pub const SAMPLE_PHOTO: &str = env!("ENROLLD_SAMPLE_PHOTO");
