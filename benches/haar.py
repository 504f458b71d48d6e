#!/usr/bin/env python3
"""OpenCV's Haar cascade (haarcascade_frontalface_default.xml, as OpenCV's
own face-detection sample uses it) over the photos named on the command
line: the whole-process comparison for `cargo bench --bench detect`.
Prints one line per photo: its path and the faces found. It finds no
landmarks. Installed by scripts/setup-bench."""
import sys

import cv2

cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
for path in sys.argv[1:]:
    img = cv2.imread(path)
    if img is None:
        print(f"{path}: not an image", file=sys.stderr)
        sys.exit(1)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    print(path, len(faces))
