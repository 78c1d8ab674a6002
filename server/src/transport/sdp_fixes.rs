//! Workarounds, at the SDP text, for what webrtc-rs 0.21.1 does not handle with RID-based
//! simulcast. Each one is the smallest edit that gets the behaviour right; both go away when
//! the engine handles these cases.
//!
//! # Layers forgotten on renegotiation ([`keep_simulcast_bindings`])
//!
//! Every remote description the engine applies re-creates the receive track of each media
//! section that names a track (`a=msid`). For a RID-based (simulcast) section the new track's
//! layers have no SSRC: the engine re-learns them only from packets that carry the mid and rid
//! header extensions. Browsers stop sending those extensions once our receiver reports have
//! acknowledged the SSRC (about a second in), so after any later renegotiation every packet of
//! the publisher's video was dropped inside the engine ("drop rtp packet ssrc = ..."): the
//! subscribers' video froze while audio, whose SSRCs the SDP declares, carried on.
//!
//! The engine skips sections that name no track, so for a simulcast section whose track we
//! already receive we hand the engine the description without its track naming lines (`a=msid`
//! and the `a=ssrc`/`a=ssrc-group` lines that Firefox adds beside its RIDs). Everything else,
//! directions, codecs, extensions and the RIDs themselves, is untouched; our own parsing of the
//! client's SDP reads the original.
//!
//! A third edit is not a workaround but a hint: [`add_start_bitrate`].
//!
//! # No retransmissions for simulcast layers ([`drop_simulcast_rtx`])
//!
//! The engine drops RTX packets that name their layer by repaired-rid (its RID binding path
//! returns early on them), and a browser sends exactly those for simulcast. The lost packets
//! would then never be repaired. Without RTX in our SDP for a simulcast section the browser
//! resends NACKed packets on the layer's own SSRC, which the engine takes like any other.

/// `sdp` with the track naming lines removed from each simulcast media section whose track id
/// `is_known` reports as already received on this connection.
pub fn keep_simulcast_bindings(sdp: &str, is_known: impl Fn(&str) -> bool) -> String {
    rewrite_sections(sdp, |out, lines| flush_section(out, lines, &is_known))
}

/// Splits `sdp` at its m= lines (the session part first) and lets `write` emit each part.
fn rewrite_sections(sdp: &str, mut write: impl FnMut(&mut String, &[&str])) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            write(&mut out, &section);
            section.clear();
        }
        section.push(line);
    }
    write(&mut out, &section);
    out
}

fn flush_section(out: &mut String, lines: &[&str], is_known: &impl Fn(&str) -> bool) {
    let is_media = lines.first().is_some_and(|l| l.starts_with("m="));
    let simulcast = lines.iter().any(|l| l.starts_with("a=rid:"));
    let known = lines
        .iter()
        .filter_map(|l| l.trim_end().strip_prefix("a=msid:"))
        .filter_map(|v| v.split_whitespace().nth(1))
        .any(is_known);
    let strip = is_media && simulcast && known;
    for line in lines {
        if strip && names_track(line) {
            continue;
        }
        out.push_str(line);
    }
}

/// `sdp` (one we send) without the RTX codec in media sections that receive RID simulcast:
/// its payload types leave the m= line and their rtpmap/fmtp/rtcp-fb lines go.
pub fn drop_simulcast_rtx(sdp: &str) -> String {
    rewrite_sections(sdp, flush_without_rtx)
}

fn flush_without_rtx(out: &mut String, lines: &[&str]) {
    let simulcast = lines.first().is_some_and(|l| l.starts_with("m=video"))
        && lines.iter().any(|l| l.starts_with("a=rid:"));
    let rtx: Vec<&str> = if simulcast {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|v| v.split_once(' '))
            .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("rtx/"))
            .map(|(pt, _)| pt)
            .collect()
    } else {
        Vec::new()
    };
    if rtx.is_empty() {
        lines.iter().for_each(|l| out.push_str(l));
        return;
    }
    let about_rtx = |l: &str| {
        ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|prefix| {
            l.strip_prefix(prefix)
                .and_then(|v| v.split([' ', '\r', '\n']).next())
                .is_some_and(|pt| rtx.contains(&pt))
        })
    };
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            // m=video <port> <proto> <pt> <pt> ...
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            let kept: Vec<&str> = body
                .split(' ')
                .enumerate()
                .filter(|(j, field)| *j < 3 || !rtx.contains(field))
                .map(|(_, field)| field)
                .collect();
            out.push_str(&kept.join(" "));
            out.push_str(ending);
        } else if !about_rtx(line) {
            out.push_str(line);
        }
    }
}

/// The send-side start bitrate Chrome reads from our SDP (`x-google-start-bitrate`, kbit/s).
/// Chrome otherwise starts its estimate at 300 kbit/s and picks a capture resolution to fit:
/// a 720p camera then goes out at 640x360 and its "bandwidth" quality limitation was seen to
/// hold it there for well over 10 s, even with the estimate above 3 Mbit/s. GCC backs off from
/// this start within a few feedback rounds on a slower link.
pub const START_BITRATE_KBPS: u32 = 1500;

/// `sdp` (one we send) with `x-google-start-bitrate` on every video codec but RTX, so a
/// browser publisher starts near full quality (other browsers ignore the parameter).
pub fn add_start_bitrate(sdp: &str, kbps: u32) -> String {
    let param = format!("x-google-start-bitrate={kbps}");
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut video = false;
    let lines: Vec<&str> = sdp.split_inclusive('\n').collect();
    // Payload types in the current video section that have their own fmtp line.
    let has_fmtp = |from: usize, pt: &str| {
        lines[from..]
            .iter()
            .take_while(|l| !l.starts_with("m="))
            .any(|l| {
                l.strip_prefix("a=fmtp:")
                    .is_some_and(|v| v.split(' ').next() == Some(pt))
            })
    };
    let mut section_start = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("m=") {
            video = line.starts_with("m=video");
            section_start = i;
        }
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if video
            && let Some((pt, codec)) = body
                .strip_prefix("a=rtpmap:")
                .and_then(|v| v.split_once(' '))
            && is_media_codec(codec)
        {
            out.push_str(line);
            if !has_fmtp(section_start + 1, pt) {
                out.push_str(&format!("a=fmtp:{pt} {param}{ending}"));
            }
            continue;
        }
        if video
            && let Some(rest) = body.strip_prefix("a=fmtp:")
            && let Some(pt) = rest.split(' ').next()
            && media_codec_of(&lines[section_start..], pt)
            && !rest.contains("x-google-start-bitrate")
        {
            out.push_str(body);
            out.push(';');
            out.push_str(&param);
            out.push_str(ending);
            continue;
        }
        out.push_str(line);
    }
    out
}

/// A video codec that carries media (not rtx, red, ulpfec, flexfec).
fn is_media_codec(codec: &str) -> bool {
    let name = codec.split('/').next().unwrap_or("").to_ascii_lowercase();
    matches!(name.as_str(), "vp8" | "vp9" | "h264" | "h265" | "av1")
}

fn media_codec_of(section: &[&str], pt: &str) -> bool {
    section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|v| v.split_once(' '))
        .any(|(p, codec)| p == pt && is_media_codec(codec))
}

fn names_track(line: &str) -> bool {
    line.starts_with("a=msid:") || line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=msid:stream audio-track\r\n\
a=ssrc:11 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=msid:stream video-track\r\n\
a=rid:q send\r\n\
a=rid:h send\r\n\
a=simulcast:send q;h\r\n\
a=ssrc-group:SIM 1 2\r\n\
a=ssrc:1 cname:x\r\n\
a=ssrc:2 cname:x\r\n";

    #[test]
    fn strips_track_naming_from_known_simulcast_sections_only() {
        let out = keep_simulcast_bindings(OFFER, |t| t == "video-track" || t == "audio-track");
        // The audio section declares its SSRC and has no RIDs: untouched.
        assert!(out.contains("a=msid:stream audio-track\r\n"));
        assert!(out.contains("a=ssrc:11 cname:x\r\n"));
        // The simulcast section loses its track naming, keeps everything else.
        assert!(!out.contains("video-track"));
        assert!(!out.contains("a=ssrc:1 "));
        assert!(!out.contains("a=ssrc-group:SIM"));
        for kept in [
            "a=rid:q send",
            "a=rid:h send",
            "a=simulcast:send q;h",
            "a=mid:1",
        ] {
            assert!(out.contains(kept), "{kept} kept");
        }
        assert!(out.starts_with("v=0\r\n"));
    }

    #[test]
    fn rtx_leaves_simulcast_sections_only() {
        let sdp = "v=0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:98 H264/90000\r\n\
a=rid:q recv\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n";
        let out = drop_simulcast_rtx(sdp);
        let (first, second) = out.split_at(out.rfind("m=video").unwrap());
        assert!(
            first.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\n"),
            "{first}"
        );
        assert!(!first.contains("rtx") && !first.contains("apt=96"));
        assert!(first.contains("a=rtcp-fb:96 nack") && first.contains("a=rtpmap:98 H264"));
        // Not simulcast: untouched.
        assert_eq!(second, &sdp[sdp.rfind("m=video").unwrap()..]);
        assert_eq!(drop_simulcast_rtx("garbage"), "garbage");
    }

    #[test]
    fn start_bitrate_goes_on_video_media_codecs() {
        let sdp = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1\r\n";
        let out = add_start_bitrate(sdp, 1500);
        assert!(out.contains("a=rtpmap:96 VP8/90000\r\na=fmtp:96 x-google-start-bitrate=1500\r\n"));
        assert!(out.contains("a=fmtp:102 packetization-mode=1;x-google-start-bitrate=1500\r\n"));
        assert!(out.contains("a=fmtp:97 apt=96\r\n"), "RTX untouched");
        assert!(
            out.contains("a=fmtp:111 minptime=10\r\n"),
            "audio untouched"
        );
        assert_eq!(add_start_bitrate(&out, 1500), out, "applied once");
    }

    #[test]
    fn a_new_simulcast_track_keeps_its_lines() {
        let out = keep_simulcast_bindings(OFFER, |_| false);
        assert_eq!(out, OFFER);
    }

    #[test]
    fn malformed_input_passes_through() {
        for sdp in [
            "",
            "garbage",
            "m=video\na=rid:q send\na=msid:\n",
            "a=msid:s t\n",
        ] {
            let out = keep_simulcast_bindings(sdp, |_| true);
            assert!(out.len() <= sdp.len());
        }
        assert_eq!(
            keep_simulcast_bindings("a=msid:s t\n", |_| true),
            "a=msid:s t\n"
        );
    }
}
