//! From the camera to a queued enrollment: frame sources ([`source`]),
//! bounded decoding ([`frame`]), face detection ([`detect`]), scoring and
//! rejection reasons ([`quality`]), the best shot of a burst ([`burst`]),
//! JPEG within each vendor's limits ([`encode`]), and the pipeline that
//! ties them together ([`enroll`]).

pub mod burst;
pub mod detect;
pub mod encode;
pub mod enroll;
pub mod frame;
pub mod quality;
pub mod source;
