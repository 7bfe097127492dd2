"""A season trial: the MPC against a tuned thermostat on twins the model never saw.

One concept per module:

- :mod:`app.season.weeks`: the three TMY3 weeks (winter, spring, summer) and the windows before
  each (training days, tuning week);
- :mod:`app.season.twins`: the evaluation twins, with wider parameter variation than the
  training fleet (plant mismatch);
- :mod:`app.season.history`: the training fleet's readings before a week, as feature rows;
- :mod:`app.season.forecaster`: the in-process forecast model and the controller's view of it;
- :mod:`app.season.window`: a twin's recent readings and its newest feature row (as serving
  builds it);
- :mod:`app.season.trial`: one twin x window x controller, simulated in-process, and its figures;
- :mod:`app.season.sweep`: the thermostat's tuning sweep and the rule that picks a setting;
- :mod:`app.season.table`: per season, each figure's mean and spread over twins, the margins and
  the verdict against the target;
- :mod:`app.season.plots`: the figures as PNG.

``bench/control.py`` runs a trial as a Ray job. Importing this package does no work.
"""
