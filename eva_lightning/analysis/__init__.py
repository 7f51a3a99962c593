"""Looking inside a model: GradCAM, receptive-field/parameter summary, figures."""
