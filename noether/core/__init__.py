"""Core data types and schemas shared by the modelling code and the explorer."""
