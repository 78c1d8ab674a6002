//! Simulcast layer selection, as pure functions over small slices: which layer a subscriber
//! wants (from its settings and the layers' declared sizes), which one it gets (from what is
//! arriving), and which layers the publisher must keep sending (dynacast).
//!
//! Layers are identified by their rank: 0 is the lowest quality, `n - 1` the best.

/// What a subscriber asked for one video track (see `UpdateTrackSettings` in signal.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerRequest {
    /// No preference: the best layer.
    #[default]
    Best,
    Low,
    Medium,
    High,
    /// The size the video is shown at, in device pixels: the smallest layer that covers it.
    Size {
        width: u32,
        height: u32,
    },
    /// Not shown: nothing forwarded.
    Paused,
}

impl LayerRequest {
    /// From the signaling message's fields; precedence: paused, quality, size.
    pub fn from_settings(quality: i32, width: u32, height: u32, paused: bool) -> Self {
        use prism_proto::signal::VideoQuality;
        if paused {
            return Self::Paused;
        }
        match VideoQuality::try_from(quality) {
            Ok(VideoQuality::Low) => Self::Low,
            Ok(VideoQuality::Medium) => Self::Medium,
            Ok(VideoQuality::High) => Self::High,
            _ if width > 0 || height > 0 => Self::Size { width, height },
            _ => Self::Best,
        }
    }
}

/// A layer's declared size (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSize {
    pub width: u32,
    pub height: u32,
}

/// The rank the subscriber wants among `sizes` (one per layer, lowest first), or None when
/// paused or there are no layers. With two layers, medium is the upper one (the middle of
/// three rounds up); a size larger than every layer gets the best one, and when sizes are
/// unknown each layer below the best is taken to halve the size of the one above.
pub fn wanted_rank(request: LayerRequest, sizes: &[LayerSize]) -> Option<usize> {
    let n = sizes.len();
    let top = n.checked_sub(1)?;
    Some(match request {
        LayerRequest::Paused => return None,
        LayerRequest::Best | LayerRequest::High => top,
        LayerRequest::Low => 0,
        LayerRequest::Medium => n / 2,
        LayerRequest::Size { width, height } => {
            let covers = |rank: usize| {
                let s = effective_size(sizes, rank);
                s.width >= width && s.height >= height
            };
            (0..n).find(|&r| covers(r)).unwrap_or(top)
        }
    })
}

/// The declared size of `rank`, or one derived from the best declared layer (halving per
/// rank down); zero when nothing is declared, which no request larger than 0x0 fits.
fn effective_size(sizes: &[LayerSize], rank: usize) -> LayerSize {
    let s = sizes[rank];
    if s.width > 0 && s.height > 0 {
        return s;
    }
    let Some((best_rank, best)) = sizes
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| s.width > 0 && s.height > 0)
    else {
        return LayerSize::default();
    };
    let shift = best_rank.saturating_sub(rank).min(16) as u32;
    LayerSize {
        width: best.width >> shift,
        height: best.height >> shift,
    }
}

/// The rank to forward given the wanted one and which layers are usable now (arriving, and
/// for a layer the subscriber is not already on, settled): the wanted layer, else the best
/// usable one below it, else the lowest usable one above it.
pub fn available_rank(wanted: usize, usable: impl Fn(usize) -> bool, n: usize) -> Option<usize> {
    if wanted < n && usable(wanted) {
        return Some(wanted);
    }
    (0..wanted.min(n))
        .rev()
        .find(|&r| usable(r))
        .or_else(|| (wanted + 1..n).find(|&r| usable(r)))
}

/// Dynacast: the highest rank the publisher must keep sending, given each subscriber's wanted
/// rank (None for paused ones). Every layer up to it stays on, as fallbacks; with no
/// subscriber wanting video, only the lowest, so the next subscriber starts at once.
pub fn highest_needed(wanted: impl IntoIterator<Item = Option<usize>>) -> usize {
    wanted.into_iter().flatten().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> [LayerSize; 3] {
        [(320, 180), (640, 360), (1280, 720)].map(|(width, height)| LayerSize { width, height })
    }

    #[test]
    fn settings_precedence() {
        use LayerRequest as R;
        assert_eq!(R::from_settings(3, 100, 100, true), R::Paused);
        assert_eq!(R::from_settings(1, 1280, 720, false), R::Low);
        assert_eq!(
            R::from_settings(0, 300, 0, false),
            R::Size {
                width: 300,
                height: 0
            }
        );
        assert_eq!(R::from_settings(0, 0, 0, false), R::Best);
        assert_eq!(R::from_settings(99, 0, 0, false), R::Best);
    }

    #[test]
    fn quality_maps_to_ranks() {
        let s = sizes();
        assert_eq!(wanted_rank(LayerRequest::Low, &s), Some(0));
        assert_eq!(wanted_rank(LayerRequest::Medium, &s), Some(1));
        assert_eq!(wanted_rank(LayerRequest::High, &s), Some(2));
        assert_eq!(wanted_rank(LayerRequest::Best, &s), Some(2));
        assert_eq!(wanted_rank(LayerRequest::Paused, &s), None);
        assert_eq!(wanted_rank(LayerRequest::Medium, &s[..2]), Some(1));
        assert_eq!(wanted_rank(LayerRequest::Medium, &s[..1]), Some(0));
        assert_eq!(wanted_rank(LayerRequest::Best, &[]), None);
    }

    #[test]
    fn size_picks_the_smallest_layer_that_covers_it() {
        let s = sizes();
        let size = |width, height| LayerRequest::Size { width, height };
        assert_eq!(wanted_rank(size(320, 180), &s), Some(0));
        assert_eq!(wanted_rank(size(321, 100), &s), Some(1));
        assert_eq!(wanted_rank(size(640, 360), &s), Some(1));
        assert_eq!(wanted_rank(size(600, 400), &s), Some(2));
        assert_eq!(wanted_rank(size(3840, 2160), &s), Some(2));
        // Only the best layer's size declared: the others are taken as halves.
        let partial = [LayerSize::default(), LayerSize::default(), s[2]];
        assert_eq!(wanted_rank(size(300, 170), &partial), Some(0));
        assert_eq!(wanted_rank(size(500, 300), &partial), Some(1));
        // Nothing declared: the best layer.
        assert_eq!(
            wanted_rank(size(10, 10), &[LayerSize::default(); 3]),
            Some(2)
        );
    }

    #[test]
    fn falls_back_below_then_above() {
        let usable = |set: &'static [usize]| move |r: usize| set.contains(&r);
        assert_eq!(available_rank(2, usable(&[0, 1, 2]), 3), Some(2));
        assert_eq!(available_rank(2, usable(&[0, 1]), 3), Some(1));
        assert_eq!(available_rank(1, usable(&[0, 2]), 3), Some(0));
        assert_eq!(available_rank(0, usable(&[1, 2]), 3), Some(1));
        assert_eq!(available_rank(1, usable(&[]), 3), None);
        assert_eq!(available_rank(5, usable(&[0]), 1), Some(0));
    }

    #[test]
    fn dynacast_keeps_up_to_the_highest_wanted() {
        assert_eq!(highest_needed([Some(0), Some(0)]), 0);
        assert_eq!(highest_needed([Some(0), None, Some(2)]), 2);
        assert_eq!(highest_needed([None, None]), 0);
        assert_eq!(highest_needed([]), 0);
    }
}
