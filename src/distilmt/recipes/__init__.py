"""The commands, each readable top to bottom; every one that trains a student calls student.train_student."""
