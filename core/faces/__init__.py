"""Face backends: detect, align and embed faces behind one interface."""
