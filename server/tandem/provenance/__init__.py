"""What Tandem wrote into documents: where it is now, how it was made, and explanations of it."""
