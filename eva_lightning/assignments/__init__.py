"""One module per EVA5 assignment: its network(s) and the ImageClassifier subclass that trains them.

Configs name the subclass, e.g. ``class_path: eva_lightning.assignments.s5.S5Model``.
"""
