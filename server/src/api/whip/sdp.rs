//! The little SDP reading WHIP/WHEP needs before and after the engine sees an offer: which
//! audio/video sections send or receive, the trickle-ice-sdpfrag bodies of PATCH (RFC 8840),
//! and rewriting an offer for an ICE restart.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One audio or video section of a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    /// Port 0 rejects the section (RFC 3264).
    pub rejected: bool,
    pub direction: Direction,
}

/// The audio and video sections of `sdp`, or why it is not a session description.
pub fn media_sections(sdp: &str) -> Result<Vec<MediaSection>, String> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err("a session description starts with v=0".into());
    }
    let mut out: Vec<MediaSection> = Vec::new();
    let mut in_media = false;
    let mut any_section = false;
    let mut session_direction = Direction::SendRecv;
    let mut section_direction: Option<Direction> = None;
    let direction_of = |line: &str| match line {
        "a=sendrecv" => Some(Direction::SendRecv),
        "a=sendonly" => Some(Direction::SendOnly),
        "a=recvonly" => Some(Direction::RecvOnly),
        "a=inactive" => Some(Direction::Inactive),
        _ => None,
    };
    for line in lines {
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            return Err(format!("not an SDP line: {:.40}", line));
        }
        if let Some(m) = line.strip_prefix("m=") {
            if let (Some(last), Some(d)) = (out.last_mut(), section_direction.take())
                && in_media
            {
                last.direction = d;
            }
            any_section = true;
            let mut fields = m.split_whitespace();
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or_default();
            in_media = kind == "audio" || kind == "video";
            if in_media {
                out.push(MediaSection {
                    kind: kind.to_owned(),
                    rejected: port == "0",
                    direction: session_direction,
                });
            }
        } else if let Some(d) = direction_of(line) {
            if !any_section {
                session_direction = d;
            } else if in_media {
                section_direction = Some(d);
            }
        }
    }
    if let (Some(last), Some(d)) = (out.last_mut(), section_direction)
        && in_media
    {
        last.direction = d;
    }
    if !any_section {
        return Err("the description has no media section".into());
    }
    Ok(out)
}

/// Makes every receiving audio/video section of a viewer's offer receive-only: the server
/// only sends to a viewer, and answering sendonly binds the viewer's sections to the
/// server's senders.
pub fn receive_only(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut in_media = false;
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(m) = trimmed.strip_prefix("m=") {
            in_media = m.starts_with("audio ") || m.starts_with("video ");
        }
        if in_media && trimmed == "a=sendrecv" {
            out.push_str("a=recvonly");
            out.push_str(&line[trimmed.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A trickle-ice-sdpfrag body (RFC 8840): ICE credentials and candidates, each candidate with
/// the media section (mid, else index) it belongs to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub candidates: Vec<FragCandidate>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FragCandidate {
    /// `candidate:...` (without `a=`).
    pub candidate: String,
    pub mid: Option<String>,
    pub mline_index: Option<u16>,
}

/// Parses a PATCH body; errors say what is wrong.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFrag, String> {
    let mut frag = SdpFrag::default();
    let mut mid: Option<String> = None;
    let mut index: Option<u16> = None;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            return Err(format!("not an SDP fragment line: {:.40}", line));
        }
        if line.starts_with("m=") {
            index = Some(index.map_or(0, |i| i.saturating_add(1)));
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            frag.ufrag = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            frag.pwd = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            if v.split_whitespace().count() < 8 {
                return Err(format!("malformed candidate: {:.80}", line));
            }
            frag.candidates.push(FragCandidate {
                candidate: format!("candidate:{v}"),
                mid: mid.clone(),
                mline_index: index,
            });
        }
    }
    if frag.ufrag.is_some() != frag.pwd.is_some() {
        return Err("an ICE restart needs both a=ice-ufrag and a=ice-pwd".into());
    }
    Ok(frag)
}

/// The value of the first `a=<name>:` attribute.
pub fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
}

/// `offer` with every ICE ufrag and password replaced: the offer an ICE restart amounts to.
pub fn with_ice_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let trimmed = line.trim_end();
        let ending = &line[trimmed.len()..];
        if trimmed.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}{ending}"));
        } else if trimmed.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The sdpfrag answering an ICE restart: the server's credentials and candidates from its
/// answer.
pub fn restart_answer_frag(answer: &str) -> String {
    let mut out = String::new();
    if answer.lines().any(|l| l.trim() == "a=ice-lite") {
        out.push_str("a=ice-lite\r\n");
    }
    if let Some(u) = attribute(answer, "ice-ufrag") {
        out.push_str(&format!("a=ice-ufrag:{u}\r\n"));
    }
    if let Some(p) = attribute(answer, "ice-pwd") {
        out.push_str(&format!("a=ice-pwd:{p}\r\n"));
    }
    let mut seen = Vec::new();
    for line in answer.lines().map(str::trim) {
        if line.starts_with("a=candidate:") && !seen.contains(&line) {
            seen.push(line);
        }
    }
    if !seen.is_empty() {
        // Candidates belong to a media section; the first one carries the bundle.
        let mid = attribute(answer, "mid").unwrap_or("0");
        out.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n"));
        for c in seen {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=sendrecv\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn reads_sections_and_directions() {
        let s = media_sections(OFFER).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind.as_str(), s[0].rejected, s[0].direction),
            ("audio", false, Direction::SendRecv)
        );
        assert_eq!(
            (s[1].kind.as_str(), s[1].rejected, s[1].direction),
            ("video", true, Direction::SendOnly)
        );
        assert!(media_sections("hello").is_err());
        assert!(media_sections("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n").is_err());
        assert!(media_sections("v=0\r\nnonsense\r\n").is_err());
    }

    #[test]
    fn viewer_offers_become_receive_only() {
        let r = receive_only(OFFER);
        let s = media_sections(&r).unwrap();
        assert_eq!(s[0].direction, Direction::RecvOnly);
        assert_eq!(s[1].direction, Direction::SendOnly);
        assert!(r.contains("a=recvonly\r\n"));
    }

    #[test]
    fn parses_trickle_fragments() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            m=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
            a=end-of-candidates\r\n";
        let f = parse_sdpfrag(body).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(f.candidates[0].mline_index, Some(0));
        assert!(
            f.candidates[0]
                .candidate
                .starts_with("candidate:1387637174 1 udp")
        );
        assert!(parse_sdpfrag("a=candidate:1 1 udp\r\n").is_err());
        assert!(parse_sdpfrag("a=ice-ufrag:x\r\n").is_err());
        assert!(parse_sdpfrag("garbage").is_err());
        assert_eq!(parse_sdpfrag("").unwrap(), SdpFrag::default());
    }

    #[test]
    fn rewrites_credentials_for_a_restart() {
        let r = with_ice_credentials(OFFER, "wxyz", "newpasswordnewpassword");
        assert_eq!(attribute(&r, "ice-ufrag"), Some("wxyz"));
        assert_eq!(attribute(&r, "ice-pwd"), Some("newpasswordnewpassword"));
        assert_eq!(r.len(), OFFER.len() - 2);
    }
}
