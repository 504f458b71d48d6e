//! `enrolld detect` on real photos and on bad input, through the real binary.

mod support;

use image::ImageFormat;
use serde_json::Value;
use support::*;

fn report(v: &Value) -> &Value {
    &v["report"]
}

#[test]
fn every_portrait_is_accepted_and_its_crop_written() {
    let e = Enrolld::new("");
    let out_dir = e.path("crops");
    let mut args = vec![
        "detect".to_string(),
        "--out-dir".into(),
        out_dir.display().to_string(),
    ];
    for i in 0..FACES.len() {
        let p = e.path(&format!("person{i}.jpg"));
        write_jpeg(&portrait(i, 3.0), &p);
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, v) = e.json(&args);
    assert_eq!(code, 0, "{v:#}");
    let results = v.as_array().expect("array");
    assert_eq!(results.len(), FACES.len());
    for (i, r) in results.iter().enumerate() {
        let rep = report(r);
        assert_eq!(rep["accepted"], true, "person{i}: {r:#}");
        // The chosen face is the person in the middle, about 3x its size in the photo.
        let face = &rep["chosen"];
        let size = face["width"].as_u64().expect("width") as f64;
        let expected = FACES[i].2 as f64 * 3.0;
        assert!(
            (size - expected).abs() / expected < 0.3,
            "person{i}: face {size} px, expected about {expected}"
        );
        let (w, h) = (
            rep["width"].as_f64().expect("w"),
            rep["height"].as_f64().expect("h"),
        );
        let cx = face["x"].as_f64().expect("x") + size / 2.0;
        assert!(
            (cx - w / 2.0).abs() < w * 0.2,
            "person{i}: face centre {cx} of {w}"
        );
        assert!(face["y"].as_f64().expect("y") < h / 2.0);
        for key in ["sharpness", "brightness", "contrast", "overall"] {
            assert!(rep["scores"][key].as_f64().expect(key) > 0.0, "{key}");
        }
        // The crop exists, decodes, and is within JD's limits.
        let path = r["output"]["path"].as_str().expect("output path");
        let bytes = std::fs::read(path).expect("crop written");
        assert!(bytes.len() < 2_000_000);
        let img = image::load_from_memory(&bytes).expect("crop decodes");
        assert!(img.width() >= 48 && img.height() >= 48);
        assert_eq!(
            img.width() as u64,
            r["output"]["image"]["width"].as_u64().expect("w")
        );
    }
}

#[test]
fn the_largest_of_many_faces_is_chosen() {
    // The group photo itself at a 40 px minimum (and the eye distance's
    // minimum scaled with it, 24 px at 80): many faces of nearly the same
    // size; the chosen one is the largest box found.
    let e = Enrolld::new(
        "[detect]\nmin_face_px = 40\n[quality]\nmin_face_px = 40\nmin_eye_distance_px = 12\n",
    );
    let photo = group_photo_path();
    let (code, v) = e.json(&["detect", photo.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{v:#}");
    let rep = report(&v[0]);
    assert!(rep["faces_seen"].as_u64().expect("n") >= 20, "{rep:#}");
    let chosen = &rep["chosen"];
    let largest = rep["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| f["width"].as_u64().unwrap_or(0) * f["height"].as_u64().unwrap_or(0))
        .max();
    assert_eq!(
        Some(chosen["width"].as_u64().unwrap_or(0) * chosen["height"].as_u64().unwrap_or(0)),
        largest
    );
}

#[test]
fn of_two_people_the_nearer_one_is_enrolled() {
    // Person 1 near the camera (face ~190 px) and person 4 behind (~110 px),
    // side by side on the photo's pavement.
    let near = portrait(1, 3.2);
    let far = portrait(4, 2.0);
    let mut frame = image::imageops::resize(
        &no_face_photo(),
        1000,
        600,
        image::imageops::FilterType::Triangle,
    );
    image::imageops::overlay(&mut frame, &far, 60, 120);
    image::imageops::overlay(&mut frame, &near, 520, 40);
    let e = Enrolld::new("");
    let p = e.path("two.jpg");
    write_jpeg(&frame, &p);
    let (code, v) = e.json(&["detect", p.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{v:#}");
    let rep = report(&v[0]);
    assert_eq!(rep["faces_seen"], 2, "{rep:#}");
    let x = rep["chosen"]["x"].as_i64().expect("x");
    assert!(x >= 520, "the nearer person (right) is chosen: {rep:#}");
    assert!(rep["chosen"]["width"].as_u64().expect("w") > 150);
}

#[test]
fn a_photo_without_a_face_is_rejected_as_no_face() {
    let e = Enrolld::new("");
    let p = e.path("street.jpg");
    write_jpeg(&no_face_photo(), &p);
    let (code, v) = e.json(&["detect", p.to_str().expect("utf8")]);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(report(&v[0])["rejection"], "no_face");
    assert_eq!(report(&v[0])["faces_seen"], 0);
    assert!(v[0]["advice"].as_str().expect("advice").contains("face"));
}

#[test]
fn quality_rejections_name_their_reason() {
    let e = Enrolld::new("");
    let cases = [
        ("small.jpg", portrait(0, 1.2), "face_too_small"),
        ("dark.jpg", exposure(&portrait(0, 3.0), 0.25), "too_dark"),
        (
            "bright.jpg",
            overexpose(&portrait(0, 3.0), 0.2),
            "too_bright",
        ),
        (
            "blurry.jpg",
            image::imageops::blur(&portrait(0, 3.0), 6.0),
            "blurry",
        ),
    ];
    for (name, img, reason) in cases {
        let p = e.path(name);
        write_jpeg(&img, &p);
        let (code, v) = e.json(&["detect", p.to_str().expect("utf8")]);
        let rep = report(&v[0]);
        // A face too damaged to detect at all is `no_face`; anything the
        // detector still sees must carry the specific reason.
        if rep["faces_seen"] == 0 {
            assert_eq!(rep["rejection"], "no_face", "{name}");
            assert_ne!(
                reason, "face_too_small",
                "{name}: small faces must still be found"
            );
        } else {
            assert_eq!(rep["rejection"], reason, "{name}: {rep:#}");
        }
        assert_eq!(code, 3, "{name}");
    }
}

#[test]
fn bad_files_get_clear_errors_and_do_not_stop_the_others() {
    let e = Enrolld::new("");
    let good = e.path("good.jpg");
    write_jpeg(&portrait(1, 3.0), &good);
    let jpeg = encode(&portrait(1, 3.0), ImageFormat::Jpeg);
    let truncated = e.path("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 3]).expect("write");
    let corrupt = e.path("corrupt.png");
    let mut png = encode(&portrait(1, 3.0), ImageFormat::Png);
    for b in png.iter_mut().skip(100).step_by(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &png).expect("write");
    let text = e.path("notes.jpg");
    std::fs::write(&text, "this is not an image\n").expect("write");
    let huge = e.path("huge.bmp");
    std::fs::write(&huge, huge_bmp_header(30_000, 30_000)).expect("write");
    let missing = e.path("missing.jpg");
    let paths = [&truncated, &corrupt, &text, &huge, &missing, &good];
    let mut args = vec!["detect"];
    args.extend(paths.iter().map(|p| p.to_str().expect("utf8")));
    let (code, v) = e.json(&args);
    assert_eq!(code, 5, "{v:#}");
    let r = v.as_array().expect("array");
    for (i, name) in ["truncated", "corrupt", "notes", "huge", "missing"]
        .iter()
        .enumerate()
    {
        let err = r[i]["error"].as_str().unwrap_or("");
        assert!(
            err == "bad_image" || (*name == "missing" && err == "file_not_found"),
            "{name}: {:#}",
            r[i]
        );
        assert!(
            r[i]["message"].as_str().expect("message").contains(name),
            "{name}: the message names the file"
        );
    }
    assert!(
        r[3]["message"]
            .as_str()
            .unwrap_or("")
            .contains("30000x30000"),
        "{:#}",
        r[3]
    );
    // The good image after the bad ones was still judged.
    assert_eq!(report(&r[5])["accepted"], true, "{:#}", r[5]);
}

#[test]
fn text_output_explains_the_decision() {
    let e = Enrolld::new("");
    let p = e.path("street.jpg");
    write_jpeg(&no_face_photo(), &p);
    let out = e.run(&["detect", p.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rejected: no_face"), "{stdout}");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn crops_for_tencent_meet_its_minimum_edge() {
    let e = Enrolld::new("[quality]\nmargin = 0.0\n");
    let p = e.path("person.jpg");
    write_jpeg(&portrait(2, 2.5), &p);
    let out_dir = e.path("out");
    let (code, v) = e.json(&[
        "detect",
        "--provider",
        "tencent",
        "--out-dir",
        out_dir.to_str().expect("utf8"),
        p.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{v:#}");
    let img = &v[0]["output"]["image"];
    assert!(
        img["width"].as_u64().expect("w") >= 64 && img["height"].as_u64().expect("h") >= 64,
        "{img}"
    );
}

/// Images shared out to several workers come back in command-line order,
/// with the same results as one worker gives.
#[test]
fn several_workers_print_what_one_prints_in_the_same_order() {
    let e = Enrolld::new("");
    let mut paths = Vec::new();
    for i in 0..FACES.len() {
        let p = e.path(&format!("person{i}.jpg"));
        write_jpeg(&portrait(i, 2.0), &p);
        paths.push(p.display().to_string());
        if i == 1 {
            let bad = e.path("not-a-photo.jpg");
            std::fs::write(&bad, "no image here\n").expect("write");
            paths.push(bad.display().to_string());
        }
    }
    let run = |jobs: &str| {
        let mut args = vec!["detect", "--jobs", jobs];
        args.extend(paths.iter().map(String::as_str));
        e.json(&args)
    };
    let (one_code, one) = run("1");
    let (many_code, many) = run("3");
    assert_eq!(one_code, 5, "an unreadable image: {one:#}");
    assert_eq!(many_code, one_code);
    assert_eq!(many, one);
    let images: Vec<&str> = one
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["image"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(images, paths);
}
