//! Header extension ids are negotiated per connection: the same URI can carry a different id on
//! the publisher's leg and on each subscriber's. A down track maps ids once, when its leg is
//! negotiated, so the per-packet rewrite is a table lookup.

use rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters;

/// Extensions that describe the publisher's own leg and must not be forwarded: transport-cc is
/// numbered per transport, mid/rid name the publisher's m-line and layer.
const LEG_LOCAL_URIS: [&str; 4] = [
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// Extension ids are 1..=14 (one-byte form) or up to 255 (two-byte form).
const MAX_ID: usize = 256;

/// Publisher-leg extension id → subscriber-leg id; 0 means "drop".
#[derive(Clone)]
pub struct ExtensionMap {
    to_subscriber: Box<[u8; MAX_ID]>,
}

impl std::fmt::Debug for ExtensionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<_> = (0..MAX_ID)
            .filter(|&i| self.to_subscriber[i] != 0)
            .map(|i| (i, self.to_subscriber[i]))
            .collect();
        f.debug_struct("ExtensionMap").field("ids", &pairs).finish()
    }
}

impl ExtensionMap {
    /// A map that drops every extension (until the subscriber leg is negotiated).
    pub fn drop_all() -> Self {
        Self {
            to_subscriber: Box::new([0; MAX_ID]),
        }
    }

    pub fn between(
        publisher: &[RTCRtpHeaderExtensionParameters],
        subscriber: &[RTCRtpHeaderExtensionParameters],
    ) -> Self {
        let mut map = Self::drop_all();
        for p in publisher {
            if LEG_LOCAL_URIS.contains(&p.uri.as_str()) {
                continue;
            }
            if let Some(s) = subscriber.iter().find(|s| s.uri == p.uri)
                && (p.id as usize) < MAX_ID
                && s.id > 0
                && s.id < MAX_ID as u16
            {
                map.to_subscriber[p.id as usize] = s.id as u8;
            }
        }
        map
    }

    #[inline]
    pub fn map(&self, publisher_id: u8) -> Option<u8> {
        match self.to_subscriber[publisher_id as usize] {
            0 => None,
            id => Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(uri: &str, id: u16) -> RTCRtpHeaderExtensionParameters {
        RTCRtpHeaderExtensionParameters {
            uri: uri.into(),
            id,
            ..Default::default()
        }
    }

    #[test]
    fn maps_by_uri_and_drops_leg_local_ones() {
        let level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
        let publisher = [
            ext(level, 1),
            ext(LEG_LOCAL_URIS[0], 3),
            ext(LEG_LOCAL_URIS[1], 4),
        ];
        let subscriber = [
            ext(level, 7),
            ext(LEG_LOCAL_URIS[0], 2),
            ext(LEG_LOCAL_URIS[1], 4),
        ];
        let map = ExtensionMap::between(&publisher, &subscriber);
        assert_eq!(map.map(1), Some(7));
        assert_eq!(map.map(3), None);
        assert_eq!(map.map(4), None);
        assert_eq!(map.map(9), None);
    }
}
