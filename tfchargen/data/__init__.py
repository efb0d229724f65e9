"""Text in: the character vocabulary (the one string <-> id boundary), data specs, tf.data pipelines.
May import: config, common."""
