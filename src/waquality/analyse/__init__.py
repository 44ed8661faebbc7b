"""Reading what is stored into answers: summaries, series and signals."""
