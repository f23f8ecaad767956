"""The model core: loading an exported model and decoding with it. No pygls, no torch."""
