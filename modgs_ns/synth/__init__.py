"""The generated dynamic scene with ground truth (`modgs-synth`)."""
