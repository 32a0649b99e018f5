"""Video to caches: optical flow, depth-prior alignment and 3D correspondence pairs.

Everything here uses only what a real video gives (frames and a monocular depth prior), never
ground truth, so the generated scene exercises the same path as a real clip.
"""
