"""One module per EVA5 assignment: its network(s) and the ImageClassifier subclass a config names."""
