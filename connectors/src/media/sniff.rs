//! File types told from the first bytes of a body (magic numbers), never from a file name or a
//! `Content-Type`: a source may call a GIF `x.webp`, serve an HTML error page as `image/png`,
//! or answer an expired link with JSON. What a destination is asked to upload, and under which
//! MIME type and extension, comes from [`sniff`] alone.

/// How many leading bytes [`sniff`] may look at; a fetcher buffers this much (or the whole
/// body, when shorter) before deciding.
pub const SNIFF_LEN: usize = 32;

/// A file type qunbridge recognises and can hand to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// JPEG picture (`FF D8 FF`).
    Jpeg,
    /// PNG picture (`89 'PNG' 0D 0A 1A 0A`).
    Png,
    /// GIF picture, still or animated (`GIF87a` / `GIF89a`).
    Gif,
    /// WebP picture (`RIFF` … `WEBP`).
    Webp,
    /// Windows bitmap (`BM` with a known DIB header size).
    Bmp,
    /// AMR voice (`#!AMR`), what WeChat and some QQ clients record.
    Amr,
    /// SILK voice (`#!SILK_V3`, possibly after a `0x02` byte), what QQ records.
    Silk,
    /// MP4 / QuickTime video (an ISO base media `ftyp` box with a video brand).
    Mp4,
}

impl FileType {
    /// The MIME type to announce when uploading the file.
    pub fn mime(self) -> &'static str {
        match self {
            FileType::Jpeg => "image/jpeg",
            FileType::Png => "image/png",
            FileType::Gif => "image/gif",
            FileType::Webp => "image/webp",
            FileType::Bmp => "image/bmp",
            FileType::Amr => "audio/amr",
            FileType::Silk => "audio/silk",
            FileType::Mp4 => "video/mp4",
        }
    }

    /// The file name extension (without the dot) for the cache and for uploads that want a
    /// name.
    pub fn extension(self) -> &'static str {
        match self {
            FileType::Jpeg => "jpg",
            FileType::Png => "png",
            FileType::Gif => "gif",
            FileType::Webp => "webp",
            FileType::Bmp => "bmp",
            FileType::Amr => "amr",
            FileType::Silk => "silk",
            FileType::Mp4 => "mp4",
        }
    }

    /// Whether the file is a picture (a destination can show it as an image or sticker).
    pub fn is_picture(self) -> bool {
        matches!(
            self,
            FileType::Jpeg | FileType::Png | FileType::Gif | FileType::Webp | FileType::Bmp
        )
    }
}

/// DIB header sizes of real bitmaps (BITMAPCOREHEADER … BITMAPV5HEADER): `BM` alone is two
/// letters any text may start with.
const BMP_DIB_SIZES: [u32; 7] = [12, 40, 52, 56, 64, 108, 124];

/// `ftyp` brands of ISO base media files that are pictures (HEIF, AVIF), not video: they are
/// not told apart here, so they are not taken for MP4.
const PICTURE_BRANDS: [&[u8; 4]; 8] = [
    b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
];

/// The type of a file from its first bytes (up to [`SNIFF_LEN`] are looked at), or `None`
/// when it is none of the known types: an HTML page, a JSON answer, an empty or truncated
/// body.
pub fn sniff(head: &[u8]) -> Option<FileType> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(FileType::Jpeg);
    }
    if head.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        return Some(FileType::Png);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some(FileType::Gif);
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        return Some(FileType::Webp);
    }
    if head.starts_with(b"BM") && head.len() >= 18 {
        let dib = u32::from_le_bytes([head[14], head[15], head[16], head[17]]);
        if BMP_DIB_SIZES.contains(&dib) {
            return Some(FileType::Bmp);
        }
    }
    if head.starts_with(b"#!AMR") {
        return Some(FileType::Amr);
    }
    if head.starts_with(b"#!SILK_V3") || head.starts_with(b"\x02#!SILK_V3") {
        return Some(FileType::Silk);
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let brand = &head[8..12];
        if size >= 8 && !PICTURE_BRANDS.iter().any(|b| &b[..] == brand) {
            return Some(FileType::Mp4);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a real 1×1 PNG.
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01";

    #[test]
    fn every_known_type_is_told_from_its_magic_bytes() {
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0x46, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 40, 0, 0, 0]);
        let cases: Vec<(&[u8], FileType)> = vec![
            (b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00", FileType::Jpeg),
            (PNG, FileType::Png),
            (b"GIF89a\x01\x00\x01\x00", FileType::Gif),
            (b"GIF87a\x01\x00\x01\x00", FileType::Gif),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", FileType::Webp),
            (&bmp, FileType::Bmp),
            (b"#!AMR\n\x3c", FileType::Amr),
            (b"#!AMR-WB\n", FileType::Amr),
            (b"\x02#!SILK_V3\x0c\x00", FileType::Silk),
            (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", FileType::Mp4),
            (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", FileType::Mp4),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), Some(expected), "{head:?}");
        }
    }

    #[test]
    fn pages_answers_and_truncated_bodies_are_not_files() {
        let cases: [&[u8]; 12] = [
            b"",
            b"<!DOCTYPE html><html><body>404</body></html>",
            b"<html>",
            br#"{"retcode":-5503007,"retmsg":"download url has expired"}"#,
            b"\xFF\xD8",
            b"\x89PNG",
            b"GIF8",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"BMW is a car maker, not a bitmap",
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
            b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00",
            b"\x00\x00\x00\x00ftyp",
        ];
        for head in cases {
            assert_eq!(sniff(head), None, "{head:?}");
        }
    }

    #[test]
    fn the_bytes_decide_not_the_name() {
        // A GIF that its source calls x.webp is a GIF, with a GIF's MIME type and extension.
        let gif = sniff(b"GIF89a\x01\x00\x01\x00\x80\x00\x00").expect("a GIF");
        assert_eq!(gif, FileType::Gif);
        assert_eq!(gif.mime(), "image/gif");
        assert_eq!(gif.extension(), "gif");
    }

    #[test]
    fn pictures_are_pictures_and_voice_and_video_are_not() {
        for picture in [
            FileType::Jpeg,
            FileType::Png,
            FileType::Gif,
            FileType::Webp,
            FileType::Bmp,
        ] {
            assert!(picture.is_picture(), "{picture:?}");
            assert!(picture.mime().starts_with("image/"), "{picture:?}");
        }
        for other in [FileType::Amr, FileType::Silk, FileType::Mp4] {
            assert!(!other.is_picture(), "{other:?}");
            assert!(!other.mime().starts_with("image/"), "{other:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = sniff(&bytes);
        }
    }
}
