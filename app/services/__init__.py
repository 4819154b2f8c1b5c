"""The domain: plain functions over models. Views, commands and tasks all call these."""
