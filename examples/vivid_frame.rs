//! Writes a raw camera frame with one face in it, for feeding a V4L2 output
//! device (the vivid loopback camera of the VM test, `scripts/test-vm`):
//!
//!   cargo run --example vivid_frame -- OUT.yuyv [WIDTH HEIGHT] [PHOTO]
//!
//! The frame is YUYV 4:2:2 (or JPEG/PNG, by OUT's extension), cut around one face of the sample photo shipped
//! with rustface (or PHOTO) and scaled to WIDTHxHEIGHT (default 640x480).

use image::imageops::FilterType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .ok_or("usage: vivid_frame OUT.yuyv [WIDTH HEIGHT] [PHOTO]")?;
    let width: u32 = args.get(1).map_or(Ok(640), |w| w.parse())?;
    let height: u32 = args.get(2).map_or(Ok(480), |h| h.parse())?;
    let photo = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| env!("ENROLLD_SAMPLE_PHOTO").to_string());
    let img = image::open(&photo)?.into_rgb8();
    // A 4:3 region around the face at (863, 250), 62 px wide, in the sample.
    let (cx, cy) = (894u32, 290u32);
    let (rw, rh) = (320u32, 240u32);
    let (x0, y0) = (
        cx.saturating_sub(rw / 2)
            .min(img.width().saturating_sub(rw)),
        cy.saturating_sub(rh / 2)
            .min(img.height().saturating_sub(rh)),
    );
    let region = image::imageops::crop_imm(&img, x0, y0, rw, rh).to_image();
    let frame = image::imageops::resize(&region, width, height, FilterType::CatmullRom);
    if out.ends_with(".yuyv") {
        std::fs::write(out, enrolld::capture::frame::rgb_to_yuyv(&frame))?;
    } else {
        frame.save(out)?; // format from the extension (.jpg, .png)
    }
    println!("{out}: {width}x{height} from {photo}");
    Ok(())
}
