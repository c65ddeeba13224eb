"""Pictures of what a model learned and does, each an image (3, H, W) in [0, 1] for TensorBoard
and the run folder's PNG files: `learned` (templates, filters, activation maps), `charts`
(confusion matrix, curves, the learning-rate finder, decision boundaries), `samples` (the worst
errors, inpainting), all drawn with `drawing`'s tiles, font and titles."""
