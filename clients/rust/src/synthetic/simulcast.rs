//! Synthetic simulcast: one [`Vp8Source`] per layer, each with its own sequence number,
//! timestamp, picture id and TL0PICIDX spaces and its own layer marker, as a browser's encoder
//! sends them; and a loop that publishes them on a simulcast [`LocalTrack`].

use std::time::{Duration, SystemTime};

use rtc::rtp::Packet;

use super::vp8::{Vp8Config, Vp8Source};
use crate::error::Result;
use crate::layers::SimulcastLayer;
use crate::track::LocalTrack;

#[derive(Debug, Clone)]
struct Layer {
    rid: String,
    source: Vp8Source,
}

/// VP8 frames for every layer of a simulcast track.
#[derive(Debug, Clone)]
pub struct SimulcastVp8 {
    layers: Vec<Layer>,
}

impl SimulcastVp8 {
    /// One source per layer, sized and paced as `layers` declare (lowest first). Layer `i`
    /// stamps marker `i` into its payloads and starts its numbering far from the others', so
    /// a receiver that gets one layer's numbers where another's belong notices.
    pub fn new(layers: &[SimulcastLayer], fps: u32, keyframe_interval: Duration) -> Self {
        let configs = layers.iter().enumerate().map(|(i, l)| {
            let i16 = i as u16;
            let config = Vp8Config {
                width: l.width as u16,
                height: l.height as u16,
                fps,
                bitrate_bps: l.bitrate_bps,
                keyframe_interval,
                initial_sequence: 1_000u16.wrapping_add(i16.wrapping_mul(20_000)),
                initial_timestamp: 90_000u32.wrapping_mul(1 + 1_000 * i as u32),
                initial_picture_id: (100 + 10_000 * i16) & 0x7fff,
                initial_tl0picidx: (10 + 80 * i) as u8,
                layer: i as u8,
                ..Vp8Config::default()
            };
            (l.rid.clone(), config)
        });
        Self::with_configs(configs)
    }

    /// One source per `(rid, config)`, lowest layer first.
    pub fn with_configs(layers: impl IntoIterator<Item = (String, Vp8Config)>) -> Self {
        Self {
            layers: layers
                .into_iter()
                .map(|(rid, config)| Layer {
                    rid,
                    source: Vp8Source::new(config),
                })
                .collect(),
        }
    }

    /// The rid of layer `index`.
    pub fn rid(&self, index: usize) -> &str {
        &self.layers[index].rid
    }

    /// The source of layer `rid`.
    pub fn layer(&self, rid: &str) -> Option<&Vp8Source> {
        self.layers.iter().find(|l| l.rid == rid).map(|l| &l.source)
    }

    /// Time between frames (the lowest layer's frame rate).
    pub fn frame_interval(&self) -> Duration {
        self.layers
            .first()
            .map_or(Duration::from_millis(33), |l| l.source.frame_interval())
    }

    /// Makes layer `rid`'s next frame a keyframe.
    pub fn request_keyframe(&mut self, rid: &str) {
        if let Some(l) = self.layers.iter_mut().find(|l| l.rid == rid) {
            l.source.request_keyframe();
        }
    }

    /// The next frame of each layer `active` accepts, by layer index; the other layers let
    /// the frame pass (see [`Vp8Source::skip_frame`]), so they resume on a keyframe.
    pub fn next_frames(&mut self, active: impl Fn(&str) -> bool) -> Vec<(usize, Vec<Packet>)> {
        self.next_frames_at(SystemTime::now(), active)
    }

    /// [`next_frames`](Self::next_frames) stamped with `now`.
    pub fn next_frames_at(
        &mut self,
        now: SystemTime,
        active: impl Fn(&str) -> bool,
    ) -> Vec<(usize, Vec<Packet>)> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if active(&layer.rid) {
                out.push((i, layer.source.next_frame_at(now)));
            } else {
                layer.source.skip_frame();
            }
        }
        out
    }
}

/// Publishes `source` on `track` at its frame rate until a write fails (the track was
/// unpublished or the room closed), which it returns: a keyframe request for a layer makes
/// that layer's next frame a keyframe; layers the track does not send now (stopped by the
/// application or by dynacast) skip their frames and resume on a keyframe.
pub async fn publish_simulcast_vp8(track: LocalTrack, mut source: SimulcastVp8) -> Result<()> {
    let mut keyframes = track.keyframe_requests();
    let mut tick = tokio::time::interval(source.frame_interval());
    loop {
        tick.tick().await;
        while let Some(request) = keyframes.try_recv() {
            if let Some(rid) = track.rid_of_ssrc(request.media_ssrc()) {
                source.request_keyframe(rid);
            }
        }
        for (index, packets) in source.next_frames(|rid| track.layer_active(rid)) {
            let rid = source.rid(index);
            for packet in &packets {
                track.write_layer_rtp(rid, packet).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Vp8PacketInfo;

    fn first_info(packets: &[Packet]) -> Vp8PacketInfo {
        Vp8PacketInfo::parse(&packets[0]).unwrap()
    }

    #[test]
    fn layers_have_their_own_spaces_markers_and_sizes() {
        let mut s = SimulcastVp8::new(&SimulcastLayer::defaults(), 30, Duration::from_secs(2));
        let frames = s.next_frames(|_| true);
        assert_eq!(frames.len(), 3);
        let infos: Vec<Vp8PacketInfo> = frames.iter().map(|(_, p)| first_info(p)).collect();
        for (i, info) in infos.iter().enumerate() {
            assert_eq!(info.stamp.unwrap().layer, i as u8);
            assert!(info.keyframe_start);
        }
        assert_eq!(infos[0].keyframe_size, Some((320, 180)));
        assert_eq!(infos[1].keyframe_size, Some((640, 360)));
        assert_eq!(infos[2].keyframe_size, Some((1280, 720)));
        for (a, b) in [(0, 1), (1, 2), (0, 2)] {
            assert_ne!(infos[a].sequence_number, infos[b].sequence_number);
            assert_ne!(infos[a].timestamp, infos[b].timestamp);
            assert_ne!(infos[a].picture_id, infos[b].picture_id);
            assert_ne!(infos[a].tl0picidx, infos[b].tl0picidx);
        }
        // The top layer carries more bytes than the lowest.
        let bytes = |i: usize| frames[i].1.iter().map(|p| p.payload.len()).sum::<usize>();
        assert!(bytes(2) > 5 * bytes(0), "{} vs {}", bytes(2), bytes(0));
        assert_eq!(s.rid(2), "f");
    }

    #[test]
    fn an_inactive_layer_skips_and_resumes_on_a_keyframe() {
        let mut s = SimulcastVp8::new(&SimulcastLayer::defaults(), 30, Duration::from_secs(60));
        let _ = s.next_frames(|_| true);
        let frames = s.next_frames(|rid| rid != "f");
        assert_eq!(
            frames.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(!first_info(&frames[0].1).keyframe_start);
        let frames = s.next_frames(|_| true);
        assert!(!first_info(&frames[0].1).keyframe_start);
        assert!(
            first_info(&frames[2].1).keyframe_start,
            "f resumes on a keyframe"
        );
    }

    #[test]
    fn keyframe_requests_are_per_layer() {
        let mut s = SimulcastVp8::new(&SimulcastLayer::defaults(), 30, Duration::from_secs(60));
        let _ = s.next_frames(|_| true);
        s.request_keyframe("h");
        s.request_keyframe("nope");
        let frames = s.next_frames(|_| true);
        let keys: Vec<bool> = frames
            .iter()
            .map(|(_, p)| first_info(p).keyframe_start)
            .collect();
        assert_eq!(keys, vec![false, true, false]);
    }
}
