//! 2.5D input for 2D networks: every slice with its neighbours as extra channels (SSHSNet's
//! stage 1 takes three adjacent slices and predicts the middle one's labels).
//!
//! A 2D configuration cuts its patches from the planes across [`SLICE_AXIS_2D`] (`i`, sagittal
//! for canonical RAS cases), whose spacing the plan keeps at the case's own slice spacing, so the
//! neighbours are the acquired slices. Stacking them as channels of the whole case before
//! sampling (training) and before the sliding window (prediction) makes every 2D patch of slice
//! `i` hold slices `i - context ..= i + context` at the same in-plane position, with the same
//! spatial augmentation, and needs nothing else of the sampler, the augmentation or the
//! network. Its price is memory: the case's images are held `2 * context + 1` times.

use crate::plan::SLICE_AXIS_2D;
use spineseg_io::Volume;

const _: () = assert!(SLICE_AXIS_2D == 0, "neighbour slices are taken along axis 0 (i)");

/// The network's input channels for `channels` image channels with `context` neighbours on
/// each side.
pub fn input_channels(channels: usize, context: usize) -> usize {
    channels * (2 * context + 1)
}

/// The images with `context` neighbouring slices on each side as channels: for each input
/// channel in order, its volume shifted by `-context ..= context` slices along
/// [`SLICE_AXIS_2D`] (channel `c * (2 * context + 1) + context` is channel `c` itself). A
/// neighbour beyond the first or last slice repeats the edge slice (the case has no data there;
/// zeros would be the normalised mean, an edge that does not exist in the image). `context` 0
/// returns the images unchanged.
pub fn with_neighbour_slices(images: &[Volume<f32>], context: usize) -> Vec<Volume<f32>> {
    if context == 0 {
        return images.to_vec();
    }
    let mut out = Vec::with_capacity(input_channels(images.len(), context));
    for image in images {
        let [ni, nj, nk] = image.shape();
        let source = image.data();
        for offset in -(context as isize)..=context as isize {
            let mut data = Vec::with_capacity(source.len());
            for row in 0..nj * nk {
                let line = &source[row * ni..(row + 1) * ni];
                data.extend((0..ni as isize).map(|i| line[(i + offset).clamp(0, ni as isize - 1) as usize]));
            }
            out.push(Volume::new([ni, nj, nk], data, image.geometry).expect("the shape is the image's"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    #[test]
    fn neighbours_are_the_adjacent_slices_with_edges_repeated() {
        // Two channels of 3 x 2 x 1 voxels; value = 10 * channel + i + 100 * j.
        let shape = [3, 2, 1];
        let channel = |c: f32| {
            let data = (0..6).map(|p| 10.0 * c + (p % 3) as f32 + 100.0 * (p / 3) as f32).collect();
            Volume::new(shape, data, Geometry::default()).unwrap()
        };
        let stacked = with_neighbour_slices(&[channel(0.0), channel(1.0)], 1);
        assert_eq!(stacked.len(), input_channels(2, 1));
        assert_eq!(stacked.len(), 6);
        // Channel 0: slice i - 1 (edge repeated), i, i + 1 (edge repeated).
        assert_eq!(stacked[0].data(), &[0.0, 0.0, 1.0, 100.0, 100.0, 101.0]);
        assert_eq!(stacked[1].data(), channel(0.0).data());
        assert_eq!(stacked[2].data(), &[1.0, 2.0, 2.0, 101.0, 102.0, 102.0]);
        // Channel 1 follows, in the same order.
        assert_eq!(stacked[3].data(), &[10.0, 10.0, 11.0, 110.0, 110.0, 111.0]);
        assert_eq!(stacked[4].data(), channel(1.0).data());
        assert!(stacked.iter().all(|v| v.shape() == shape && v.geometry == Geometry::default()));
        assert_eq!(with_neighbour_slices(&[channel(0.0)], 0), vec![channel(0.0)]);
    }
}
