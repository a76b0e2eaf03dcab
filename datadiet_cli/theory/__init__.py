"""The paper's analytic teacher-student model of data pruning (docs/theory.md).

replica: the saddle point, ε(α_prune, f) and the Keep policies; budget: the Pareto-optimal fraction,
the easy/hard crossover and f_min; simulation: exact max-margin students (App. B); figures: `theory plot`.
"""
