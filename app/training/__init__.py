"""Training and evaluation of the emotion model on FER-2013."""
