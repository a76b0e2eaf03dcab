"""The paper's analytic teacher-student model of data pruning."""
