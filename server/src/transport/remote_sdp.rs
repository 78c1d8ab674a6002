//! Workaround for webrtc-rs 0.21.1 forgetting simulcast layers on renegotiation.
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

/// `sdp` with the track naming lines removed from each simulcast media section whose track id
/// `is_known` reports as already received on this connection.
pub fn keep_simulcast_bindings(sdp: &str, is_known: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            flush_section(&mut out, &section, &is_known);
            section.clear();
        }
        section.push(line);
    }
    flush_section(&mut out, &section, &is_known);
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
